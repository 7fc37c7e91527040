"""The browser harness of the console's tests (tests/e2e/browser.py), proved on pages this module serves itself.

A small HTTP server on 127.0.0.1 serves static HTML written here and records what each request carried, so that
every check of the harness is compared with what the page really is and what the browser really sent.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.e2e.browser import (
    SCREENSHOTS,
    WINDOW_SIZE,
    accessibility_problems,
    chrome,
    navigate,
    screenshot,
    tab_order,
)

pytestmark = pytest.mark.e2e

LOGO = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16"/></svg>'
NO_LABEL = "has no label (label[for], a wrapping <label>, aria-label or aria-labelledby)"
NO_NAME = "has no accessible name (text, aria-label or aria-labelledby)"
NO_ALT = 'has no alt attribute (alt="" marks a decorative one)'


def page(body: str, *, html: str = '<html lang="en">', h1: str = "<h1>Archive console</h1>") -> str:
    head = '<head><meta charset="utf-8"><title>Test page</title></head>'
    return f"<!doctype html>{html}{head}<body>{h1}{body}</body></html>"


# Every way of naming a control and an image that the check accepts, headings in order, a skip link to a
# tabindex="-1" target and a roving tabindex inside a toolbar; hidden content is not checked.
SOUND_PAGE = page(
    """
<a href="#main">Skip to content</a>
<img src="/logo.svg" alt="wa-archive"> <img src="/logo.svg" alt="">
<main id="main" tabindex="-1">
  <h2>New erasure request</h2>
  <form method="post" action="/requests">
    <input type="hidden" name="csrf" value="token">
    <label for="subject">Subject reference</label> <input id="subject" name="subject">
    <label>Reason <select name="reason"><option>Article 17</option></select></label>
    <input type="search" name="q" aria-label="Search requests">
    <span id="note-label">Note</span> <textarea name="note" aria-labelledby="note-label"></textarea>
    <input type="checkbox" id="confirm"> <label for="confirm">I checked the legal holds</label>
    <button type="submit">Request erasure</button>
    <button type="button" aria-label="Close"><svg aria-hidden="true" width="8" height="8"></svg></button>
    <input type="submit" value="Save draft">
  </form>
  <h3>Recent requests</h3>
  <h2>Help</h2>
  <p><a href="/help">How erasure works</a> <a href="/"><img src="/logo.svg" alt="Home"></a></p>
  <div role="toolbar" aria-label="Formatting"><button>Bold</button><button tabindex="-1">Italic</button></div>
  <div hidden><input id="hidden-and-unlabelled"><h1>Hidden</h1></div>
</main>
"""
)

FLAWED_PAGE = page(
    """
<img src="/logo.svg">
<h1>Search</h1>
<form><input id="q" name="q" placeholder="Search messages"> <button>Search</button></form>
""",
    h1="<h1>Messages</h1>",
)

# A hidden field, a disabled button and an autofocus field in the middle: the order still starts at the top.
FORM_PAGE = page(
    """
<form>
  <input type="hidden" name="csrf" value="token">
  <label for="name">Name</label> <input id="name">
  <label for="email">Email</label> <input id="email" type="email" autofocus>
  <label for="topic">Topic</label> <select id="topic"><option>Erasure</option></select>
  <label for="message">Message</label> <textarea id="message"></textarea>
  <button type="button" disabled>Preview</button>
  <button type="submit">Send</button>
</form>
<p><a href="/privacy" id="privacy">Privacy</a></p>
"""
)
# The page a click leads to is served after SLOW_S, so that a wait that does not wait for it is seen.
SLOW_S = 0.8
NEXT_PAGE = page("<p>Arrived.</p>", h1="<h1>Next page</h1>")
LEAVING_PAGE = page(
    """
<p id="top"><a href="/slow/next" id="link">Next</a> <a href="#top" id="anchor">Top</a></p>
<form method="get" action="/slow/next"><button id="submit">Go</button></form>
<button type="button" id="inert">Nothing</button>
"""
)
REPLACED = "unknown error: unhandled inspector error: Node with given id does not belong to the document"

FORM_ORDER = ["input#name", "input#email", "select#topic", "textarea#message", 'button "Send"', "a#privacy"]


class PageServer(ThreadingHTTPServer):
    """Serves ``pages`` (path → HTML) on 127.0.0.1 and an SVG logo; remembers each path's last Accept-Language."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PageHandler)
        self.pages: dict[str, str] = {}
        self.accept_language: dict[str, str] = {}

    def serve(self, path: str, html: str) -> str:
        self.pages[path] = html
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.accept_language[path] = self.headers.get("Accept-Language", "")
        if path.startswith("/slow/"):
            time.sleep(SLOW_S)
        if path == "/logo.svg":
            self.reply("image/svg+xml", LOGO)
        elif path in self.server.pages:
            self.reply("text/html; charset=utf-8", self.server.pages[path].encode())
        else:
            self.send_error(404)

    def reply(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the test's own output."""


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    server = PageServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chrome() as driver:
        yield driver


def test_a_sound_page_has_no_problems(site: PageServer, browser: WebDriver) -> None:
    browser.get(site.serve("/sound", SOUND_PAGE))
    assert accessibility_problems(browser) == []


def test_a_flawed_page_yields_exactly_its_problems(site: PageServer, browser: WebDriver) -> None:
    browser.get(site.serve("/flawed", FLAWED_PAGE))
    assert accessibility_problems(browser) == [
        f"form control input#q {NO_LABEL}",
        'the page has 2 <h1> elements (h1 "Messages", h1 "Search"), one expected',
        f'image img[src="/logo.svg"] {NO_ALT}',
    ]


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        pytest.param(page("", html="<html>"), "<html> has no lang attribute", id="no lang"),
        pytest.param(page("<h2>Requests</h2>", h1=""), "the page has no <h1>", id="no h1"),
        pytest.param(page("<h3>Details</h3>"), 'heading levels skip from h1 to h3 at h3 "Details"', id="h1 to h3"),
        pytest.param(
            page('<input name="q" placeholder="Search">'), f'form control input[name="q"] {NO_LABEL}', id="placeholder"
        ),
        pytest.param(page('<label><input id="e"></label>'), f"form control input#e {NO_LABEL}", id="empty label"),
        pytest.param(
            page('<label for="other">Name</label><input id="e">'),
            f"form control input#e {NO_LABEL}",
            id="label for another",
        ),
        pytest.param(
            page('<input type="image" src="/logo.svg" id="go">'), f"image input#go {NO_ALT}", id="image input"
        ),
        pytest.param(
            page('<button id="close"><svg width="8" height="8"></svg></button>'),
            f"button button#close {NO_NAME}",
            id="icon button",
        ),
        pytest.param(
            page('<div role="button" id="more" tabindex="0"></div>'), f"button div#more {NO_NAME}", id="role button"
        ),
        pytest.param(
            page('<a href="/" id="home"><img src="/logo.svg" alt=""></a>'), f"link a#home {NO_NAME}", id="image link"
        ),
        pytest.param(page('<p id="x">a</p><p id="x">b</p>'), 'id "x" is used by 2 elements', id="duplicate id"),
        pytest.param(
            page('<button tabindex="3">Go</button>'),
            'button "Go" has tabindex="3": a positive tabindex puts it before the page\'s own keyboard order',
            id="positive tabindex",
        ),
        pytest.param(
            page('<button disabled tabindex="0">Go</button>'),
            'button "Go" has tabindex="0" but cannot take focus (disabled or inert)',
            id="tabindex on disabled",
        ),
        pytest.param(
            page('<a href="/export" tabindex="-1">Export</a>'),
            'a "Export" is taken out of the keyboard order by tabindex="-1": TAB never reaches it',
            id="link out of order",
        ),
    ],
)
def test_each_check_reports_its_problem_alone(site: PageServer, browser: WebDriver, html: str, problem: str) -> None:
    browser.get(site.serve("/case", html))
    assert accessibility_problems(browser) == [problem]


@pytest.mark.parametrize(("language", "first"), [("fr", "fr"), ("pt-BR,pt,en", "pt-BR")])
def test_the_server_receives_the_language_asked_for(site: PageServer, language: str, first: str) -> None:
    with chrome(language) as driver:
        driver.get(site.serve(f"/language/{first}", page("")))
        received = site.accept_language[f"/language/{first}"]
        navigator = driver.execute_script("return navigator.language")
    assert received.split(",")[0].split(";")[0].strip() == first, received
    assert navigator == first


def test_tab_order_lists_the_controls_from_the_top(site: PageServer, browser: WebDriver) -> None:
    browser.get(site.serve("/form", FORM_PAGE))
    assert browser.execute_script("return document.activeElement.id") == "email"  # autofocus
    assert tab_order(browser, len(FORM_ORDER)) == FORM_ORDER
    # Again, with the focus on the last control: from the top once more.
    assert tab_order(browser, 3) == FORM_ORDER[:3]
    assert accessibility_problems(browser) == []


def test_tab_order_starts_with_positive_tabindex_as_a_browser_does(site: PageServer, browser: WebDriver) -> None:
    body = (
        '<a href="/a" id="a">A</a> <button id="late" tabindex="2">Late</button>'
        ' <button id="early" tabindex="1">Early</button>'
    )
    browser.get(site.serve("/positive", page(body)))
    assert tab_order(browser, 3) == ["button#early", "button#late", "a#a"]


def test_screenshot_writes_a_png_of_the_window(site: PageServer, browser: WebDriver) -> None:
    browser.get(site.serve("/shot", SOUND_PAGE))
    path = screenshot(browser, "harness: sound page/../en")
    assert path == SCREENSHOTS / "harness-sound-page-en.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", data[16:24]) == WINDOW_SIZE  # IHDR: width, height
    assert browser.execute_script("return [innerWidth, innerHeight]") == list(WINDOW_SIZE)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=SCREENSHOTS, check=False, timeout=30)
    assert ignored.returncode == 0, f"{path} is not git-ignored"


@pytest.mark.parametrize("url", ["http://192.0.2.1/", "http://example.com/"])
def test_nothing_beyond_the_loopback_is_reached(browser: WebDriver, url: str) -> None:
    with pytest.raises(WebDriverException, match="ERR_PROXY_CONNECTION_FAILED"):
        browser.get(url)


def test_the_browser_is_quit_even_when_the_test_fails() -> None:
    started: list[int] = []

    def failing_test() -> None:
        with chrome() as driver:
            chromedriver = driver.service.process.pid
            started.extend([chromedriver, *children(chromedriver)])
            raise AssertionError("the test failed")

    with pytest.raises(AssertionError, match="the test failed"):
        failing_test()
    assert len(started) > 1, "no Chromium process under chromedriver?"
    assert [pid for pid in started if running(pid)] == []


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (chromedriver's Chromium), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("control", ["link", "submit"])
def test_navigate_returns_when_the_page_it_leads_to_has_loaded(
    site: PageServer, browser: WebDriver, control: str
) -> None:
    site.serve("/slow/next", NEXT_PAGE)
    browser.get(site.serve("/leaving", LEAVING_PAGE))
    started = time.monotonic()
    navigate(browser, lambda: browser.find_element(By.ID, control))
    assert time.monotonic() - started >= SLOW_S
    assert browser.current_url.split("?")[0].endswith("/slow/next")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Next page"
    assert browser.execute_script("return document.readyState") == "complete"


@pytest.mark.parametrize("control", ["inert", "anchor"])
def test_navigate_times_out_when_no_new_page_comes(site: PageServer, browser: WebDriver, control: str) -> None:
    """A button that leads nowhere, and a link within the page (the same document): no new page, so no return."""
    browser.get(site.serve("/leaving", LEAVING_PAGE))
    with pytest.raises(TimeoutException):
        navigate(browser, lambda: browser.find_element(By.ID, control), timeout=0.5)


def test_navigate_finds_the_element_again_after_a_replaced_document(site: PageServer, browser: WebDriver) -> None:
    site.serve("/slow/next", NEXT_PAGE)
    browser.get(site.serve("/leaving", LEAVING_PAGE))
    calls: list[str] = []

    def find() -> WebElement:
        calls.append("find")
        if len(calls) == 1:
            raise WebDriverException(REPLACED)
        return browser.find_element(By.ID, "link")

    navigate(browser, find)
    assert calls == ["find", "find"]
    assert browser.find_element(By.TAG_NAME, "h1").text == "Next page"


@pytest.mark.parametrize("error", [WebDriverException("unknown error: session deleted"), ValueError("a bug")])
def test_navigate_raises_any_other_error_at_once(site: PageServer, browser: WebDriver, error: Exception) -> None:
    browser.get(site.serve("/leaving", LEAVING_PAGE))
    calls: list[str] = []

    def find() -> WebElement:
        calls.append("find")
        raise error

    with pytest.raises(type(error)):
        navigate(browser, find)
    assert calls == ["find"]


def test_navigate_gives_up_after_three_replaced_documents(site: PageServer, browser: WebDriver) -> None:
    browser.get(site.serve("/leaving", LEAVING_PAGE))
    calls: list[str] = []

    def find() -> WebElement:
        calls.append("find")
        raise WebDriverException(REPLACED)

    with pytest.raises(WebDriverException, match="does not belong to the document"):
        navigate(browser, find)
    assert calls == ["find"] * 3
