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
  // Irreversible actions ask once more.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
});
