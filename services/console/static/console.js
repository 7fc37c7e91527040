// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The viewer's time zone, sent with the sign-in so that times are shown in it.
  for (const input of document.querySelectorAll("input[data-timezone]")) {
    try {
      input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      input.value = "";
    }
  }
  // Opening a search hit: bring its message into view and give it the keyboard focus.
  const anchor = document.querySelector("[data-anchor]");
  if (anchor) {
    anchor.scrollIntoView({ block: "center" });
    anchor.focus({ preventScroll: true });
  }
  // An export job's page: its progress bar follows the job; once it is finished the page is loaded again, with
  // the links to its files (signed when the page is served) or its error.
  const job = document.getElementById("export-job");
  if (job && job.dataset.finished === "false") {
    const bar = document.getElementById("export-progress");
    const poll = async () => {
      try {
        const answer = await fetch(job.dataset.statusUrl, { credentials: "same-origin", cache: "no-store" });
        if (answer.ok) {
          const status = await answer.json();
          if (status.finished) {
            window.location.reload();
            return;
          }
          if (bar) {
            bar.max = Math.max(status.total, 1);
            bar.value = status.done;
          }
        }
      } catch (e) {
        // the next poll tries again
      }
      window.setTimeout(poll, 1000);
    };
    window.setTimeout(poll, 500);
  }
  // Irreversible actions ask once more.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
});
