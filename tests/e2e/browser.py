"""A real browser for the console's tests: headless Chromium, screenshots, and what a keyboard or screen reader meets.

Debian's ``chromium`` and ``chromium-driver`` (one source package, so always one version) are installed by
``deploy/local/stack.sh install browser`` and by ``make stack-up``; nothing is downloaded at test time and Selenium
Manager is never asked (the driver's path is given). The browser reaches 127.0.0.1 only.

- ``chrome()`` starts a browser and always quits it, also when the test fails;
- ``screenshot()`` keeps a PNG in ``.artifacts/screenshots/`` (git-ignored) for a person to look at;
- ``accessibility_problems()`` checks the loaded page in the browser itself, where layout and labels are real;
- ``tab_order()`` walks the page with the TAB key, as a keyboard user does;
- ``navigate()`` clicks a link or a submit button and waits until the page it leads to has loaded.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from devtools.samples import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1280, 900)  # the page's viewport: the same layout and screenshot size on every machine
# A console page is served from 127.0.0.1 and renders in well under a second; these only stop a hung page or
# script from holding a test until pytest's own timeout.
PAGE_LOAD_TIMEOUT_S = 15
SCRIPT_TIMEOUT_S = 10
SCREENSHOTS = REPO_ROOT / ".artifacts" / "screenshots"
MAX_TABS = 200
NAVIGATION_TIMEOUT_S = 20
# Chromium's answer when an element was found in a document that was being replaced (its node ids are gone).
_REPLACED_DOCUMENT = "does not belong to the document"
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


@contextlib.contextmanager
def chrome(language: str = "en") -> Iterator[webdriver.Chrome]:
    """A headless Chromium whose Accept-Language (and ``navigator.language``) is ``language``, quit on exit.

    ``language`` is a language tag or a comma-separated list of them in order of preference (``"fr"``,
    ``"pt-BR,pt,en"``). Runs as root in a container. Any host but the loopback one fails at once with
    ``net::ERR_PROXY_CONNECTION_FAILED`` (a ``WebDriverException`` from ``get``). Raises RuntimeError, with the
    command that installs them, when Chromium or chromedriver is missing.
    """
    tags = [tag.strip() for tag in language.split(",")]
    if not all(_LANGUAGE_TAG.fullmatch(tag) for tag in tags):
        raise ValueError(f"not a language tag or a comma-separated list of them: {language!r}")
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: run `deploy/local/stack.sh install browser`")
    # Every request Chromium would send beyond the loopback goes to this proxy: a port bound but never listening,
    # so it is refused at once, and no other process can take the port while the browser runs. Chromium never
    # sends 127.0.0.1 or localhost through a proxy.
    with socket.socket() as refusing_proxy:
        refusing_proxy.bind(("127.0.0.1", 0))
        options = _chrome_options(",".join(tags), refusing_proxy.getsockname()[1])
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        try:
            # --window-size is the outer window, and headless Chromium draws a frame in it (143 px of 900 here):
            # the page itself is given the whole size, so that layouts and screenshots are 1280x900.
            width, height = WINDOW_SIZE
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            yield driver
        finally:
            driver.quit()


def sign_in(driver: WebDriver, console: str, who: tuple[str, str]) -> None:
    """Sign ``who`` (a name and its demo token) in to the console at ``console``, landing on the search page. The one
    place the browser tests sign a person in: when sign-in moves to the identity provider's own page, only this
    changes."""
    driver.get(f"{console}/signin")
    driver.find_element(By.ID, "name").send_keys(who[0])
    driver.find_element(By.ID, "token").send_keys(who[1])
    navigate(driver, lambda: driver.find_element(By.ID, "signin"))


def navigate(
    driver: WebDriver,
    find: Callable[[], WebElement],
    timeout: float = NAVIGATION_TIMEOUT_S,
    *,
    confirm: bool = False,
) -> None:
    """Click the element ``find`` returns (a link or a submit button) and wait until a new document has loaded;
    with ``confirm``, accept the confirmation the button asks first (``data-confirm``), as a person clicks OK.

    The page shown before the click is marked with a script variable, which only that document has: the wait ends
    when the window's document no longer has it and is complete. (Waiting for an element of the old page to go
    stale does not do: Chromium may answer "Node with given id does not belong to the document" instead of "stale"
    while it swaps documents, seen in CI.) When the click itself meets that error or a stale element, and no new
    document has come, the element is found again, at most twice. Raises TimeoutException when no page comes.
    """
    mark = uuid.uuid4().hex
    driver.execute_script("window.__waArchivePage = arguments[0]", mark)

    def arrived(d: WebDriver) -> bool:
        script = "return window.__waArchivePage !== arguments[0] && document.readyState === 'complete'"
        return bool(d.execute_script(script, mark))

    for attempt in range(3):
        try:
            find().click()
            break
        except (StaleElementReferenceException, WebDriverException) as exc:
            transient = isinstance(exc, StaleElementReferenceException) or _REPLACED_DOCUMENT in str(exc)
            if attempt == 2 or not transient:
                raise
            with contextlib.suppress(WebDriverException):
                if arrived(driver):
                    return
    if confirm:
        WebDriverWait(driver, timeout).until(expected_conditions.alert_is_present()).accept()
    # While the documents swap, a script may meet neither (the same error): that is "not yet".
    WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(WebDriverException,)).until(arrived)


def _chrome_options(languages: str, proxy_port: int) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # Chromium's sandbox cannot run as root, which is how CI and the containers run the suite.
        "--no-sandbox",
        # A container's /dev/shm is often 64 MB; Chromium crashes when it fills, so it uses /tmp instead.
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        "--force-device-scale-factor=1",
        f"--lang={languages.split(',', maxsplit=1)[0]}",
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        # No DNS either, and no WebRTC UDP that would go around the proxy. The rules match IP literals too.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        # None of Chromium's own traffic: component updates, field trials, first-run pages.
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(argument)
    # The pref is what Accept-Language and navigator.languages are built from: headless, --lang alone leaves en-US.
    options.add_experimental_option("prefs", {"intl.accept_languages": languages})
    options.timeouts = {"pageLoad": PAGE_LOAD_TIMEOUT_S * 1000, "script": SCRIPT_TIMEOUT_S * 1000, "implicit": 0}
    return options


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save what the browser shows as ``.artifacts/screenshots/<name>.png`` (overwriting it) and return the path.

    ``name`` is reduced to letters, digits, ``_``, ``-`` and single dots (any other run becomes one ``-``), so a
    test id such as ``"login[fr]/../error"`` is a safe file name (``login-fr-error.png``) and cannot leave the folder.
    """
    stem = re.sub(r"(?:[^A-Za-z0-9._-]|\.{2,})+", "-", name).strip(".-")[:120] or "screenshot"
    path = SCREENSHOTS / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(driver.get_screenshot_as_png())
    return path


# Shared by the scripts below: whitespace squashed, and one short description of an element, such as
# `input#email`, `select[name="topic"]`, `button "Send"` or `img[src="/logo.svg"]`.
_DESCRIBE_JS = r"""
const squash = (s) => (s || '').replace(/\s+/g, ' ').trim();
const describe = (el) => {
  if (!el) return '(none)';
  const tag = el.tagName.toLowerCase();
  if (el === document.body || el === document.documentElement) return tag;
  if (el.id) return `${tag}#${el.id}`;
  const name = el.getAttribute('name');
  if (name) return `${tag}[name="${name}"]`;
  const text = squash(el.innerText || (el.tagName === 'INPUT' ? el.value : '')).slice(0, 40);
  if (text) return `${tag} "${text}"`;
  for (const attribute of ['src', 'href', 'type']) {
    const value = el.getAttribute(attribute);
    if (value) return `${tag}[${attribute}="${value}"]`;
  }
  return tag;
};
"""

_ACCESSIBILITY_JS = (
    _DESCRIBE_JS
    + r"""
const problems = [];
const rendered = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
const all = (selector) => Array.from(document.querySelectorAll(selector));
const shown = (selector) => all(selector).filter(rendered);
// The text a screen reader reads for a subtree: its text and the alt of its images, without `skip` (the control
// inside its own label) and without what is hidden from it.
const textOf = (node, skip) => {
  if (node.nodeType === Node.TEXT_NODE) return node.data;
  if (node.nodeType !== Node.ELEMENT_NODE || node === skip) return '';
  if (node.getAttribute('aria-hidden') === 'true' || !rendered(node)) return '';
  if (node.tagName === 'IMG' || (node.tagName === 'INPUT' && node.type === 'image')) {
    return node.getAttribute('alt') || '';
  }
  const aria = squash(node.getAttribute('aria-label'));
  if (aria) return aria;
  return Array.from(node.childNodes, (child) => textOf(child, skip)).join(' ');
};
const labelledBy = (el) => squash((el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)
  .map((id) => { const ref = document.getElementById(id); return ref ? ref.textContent : ''; }).join(' '));
const ariaName = (el) => labelledBy(el) || squash(el.getAttribute('aria-label'));

if (!squash(document.documentElement.getAttribute('lang'))) problems.push('<html> has no lang attribute');

// Form controls: a placeholder or a title is no label (the first goes away as one types).
const notLabelled = ['hidden', 'submit', 'reset', 'button', 'image'];
const labelWays = 'label[for], a wrapping <label>, aria-label or aria-labelledby';
for (const el of shown('input, select, textarea')) {
  if (el.tagName === 'INPUT' && notLabelled.includes(el.type)) continue;
  const labelled = Array.from(el.labels || []).some((label) => squash(textOf(label, el)));
  if (!labelled && !ariaName(el)) {
    problems.push(`form control ${describe(el)} has no label (${labelWays})`);
  }
}

const h1s = shown('h1');
if (h1s.length === 0) problems.push('the page has no <h1>');
if (h1s.length > 1) {
  problems.push(`the page has ${h1s.length} <h1> elements (${h1s.map(describe).join(', ')}), one expected`);
}
let previous = 0;
for (const heading of shown('h1, h2, h3, h4, h5, h6')) {
  const level = Number(heading.tagName[1]);
  if (previous && level > previous + 1) {
    problems.push(`heading levels skip from h${previous} to h${level} at ${describe(heading)}`);
  }
  previous = level;
}

for (const el of shown('img:not([alt]), input[type="image"]:not([alt])')) {
  problems.push(`image ${describe(el)} has no alt attribute (alt="" marks a decorative one)`);
}

const defaultNames = {submit: 'Submit', reset: 'Reset'};
for (const el of shown('button, [role="button"], input[type="button"], input[type="submit"], input[type="reset"]')) {
  const name = ariaName(el) || (el.tagName === 'INPUT' ? squash(el.value) || defaultNames[el.type] : squash(textOf(el)))
    || squash(el.getAttribute('title'));
  if (!name) problems.push(`button ${describe(el)} has no accessible name (text, aria-label or aria-labelledby)`);
}
for (const el of shown('a[href], [role="link"]')) {
  if (!(ariaName(el) || squash(textOf(el)) || squash(el.getAttribute('title')))) {
    problems.push(`link ${describe(el)} has no accessible name (text, aria-label or aria-labelledby)`);
  }
}

const ids = new Map();
for (const el of all('[id]')) if (el.id) ids.set(el.id, (ids.get(el.id) || 0) + 1);
for (const [id, count] of ids) if (count > 1) problems.push(`id "${id}" is used by ${count} elements`);

// Keyboard order. Inside a composite widget (a toolbar, a listbox...) tabindex="-1" is the roving-tabindex pattern.
const composite = '[role="toolbar"], [role="listbox"], [role="menu"], [role="menubar"], [role="radiogroup"], '
  + '[role="tablist"], [role="tree"], [role="treegrid"], [role="grid"]';
const nativelyFocusable = 'a[href], area[href], button, input:not([type="hidden"]), select, textarea, summary, '
  + 'iframe, [contenteditable]:not([contenteditable="false"])';
for (const el of all('[tabindex]')) {
  const value = el.getAttribute('tabindex').trim();
  const index = Number.parseInt(value, 10);
  if (Number.isNaN(index)) continue;
  if (index > 0) {
    const why = "a positive tabindex puts it before the page's own keyboard order";
    problems.push(`${describe(el)} has tabindex="${value}": ${why}`);
  }
  if (!rendered(el)) continue;
  if (index >= 0 && (el.disabled || el.closest('fieldset[disabled], [inert]'))) {
    problems.push(`${describe(el)} has tabindex="${value}" but cannot take focus (disabled or inert)`);
  }
  if (index < 0 && el.matches(nativelyFocusable) && !el.disabled && !el.closest(composite)) {
    problems.push(`${describe(el)} is taken out of the keyboard order by tabindex="${value}": TAB never reaches it`);
  }
}
return problems;
"""
)


def accessibility_problems(driver: WebDriver) -> list[str]:
    """What the loaded page gets wrong for a screen reader or a keyboard, one readable sentence each; [] if nothing.

    Checked in the browser on the rendered page (what is not displayed is not checked): ``<html lang>``; a label for
    each form control (``label[for]``, a wrapping ``<label>``, ``aria-label`` or ``aria-labelledby``; not a
    placeholder); exactly one ``<h1>`` and no skipped heading level; ``alt`` on images; a name for buttons and
    links; unique ids; no positive tabindex; no tabindex on a disabled or inert element; no natively focusable
    control taken out of the keyboard order by a negative tabindex (except inside a composite widget). A small
    subset of WCAG that catches the common slips; it proves the absence of nothing else.
    """
    return _strings(driver.execute_script(_ACCESSIBILITY_JS))


# The start of the order is found by leaving the page at its end: from a marker focused after everything else,
# TAB either leaves the document (the next TAB comes back to its first element) or wraps to that first element.
# Blurring or focusing something at the top instead would make Chromium go on from there and skip the elements
# with a positive tabindex, which come first.
_FOCUS_PAST_THE_END_JS = """
const marker = document.createElement('span');
marker.tabIndex = 0;
marker.setAttribute('data-tab-order-marker', '');
document.body.append(marker);
marker.focus();
"""
_FOCUSED_JS = _DESCRIBE_JS + "return describe(document.activeElement);"
_DROP_MARKER_JS = (
    _DESCRIBE_JS
    + """
for (const marker of document.querySelectorAll('[data-tab-order-marker]')) marker.remove();
const focused = document.activeElement;
return !focused || focused === document.body || focused === document.documentElement ? null : describe(focused);
"""
)


def tab_order(driver: WebDriver, count: int) -> list[str]:
    """Press TAB ``count`` times from the top of the page; the element focused after each press, described.

    As after a fresh page load, whatever had the focus (an ``autofocus`` field, say): the first entry is the first
    element of the keyboard order. A description is ``tag#id``, else ``tag[name="..."]``, else ``tag "text"``;
    ``body`` means the focus left the page after its last element. The page receives the key events.
    """
    if not 0 < count <= MAX_TABS:
        raise ValueError(f"count must be between 1 and {MAX_TABS}, not {count}")
    driver.execute_script(_FOCUS_PAST_THE_END_JS)
    _press_tab(driver)
    first = driver.execute_script(_DROP_MARKER_JS)
    order = [] if first is None else [str(first)]
    while len(order) < count:
        _press_tab(driver)
        order.append(str(driver.execute_script(_FOCUSED_JS)))
    return order


def _press_tab(driver: WebDriver) -> None:
    ActionChains(driver).send_keys(Keys.TAB).perform()


def _strings(result: object) -> list[str]:
    if not isinstance(result, list) or not all(isinstance(item, str) for item in result):
        raise TypeError(f"the page script returned {result!r}, not a list of strings")
    return [str(item) for item in result]
