"""Single sign-on in a real browser (Debian's headless Chromium) against the real Keycloak: a person signs in through
Keycloak's own login page, lands on the search and sees their name; signing out ends Keycloak's session too, so the
next sign-in shows Keycloak's login form again instead of passing straight through.

The console runs as its own process (``python -m services.console``, demo.env's settings) on 127.0.0.1:8083, the
address the realm's redirect URI names. Screenshots go to .artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from devtools.devrun import apply_migrations
from devtools.samples import REPO_ROOT
from tests.e2e.browser import accessibility_problems, chrome, navigate, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.realm]

CONSOLE_PORT = 8083  # the realm's redirect URI names it
PERSON = "reader.chloe"
PERSON_NAME = "Chloé Durand"  # her first and last names in the realm file


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[str]:
    try:
        socket.create_connection(("127.0.0.1", int(demo_env["WA_KEYCLOAK_PORT"])), timeout=1).close()
    except OSError:
        pytest.fail("Keycloak is not listening: run `make stack-up` (stack.sh part keycloak) first", pytrace=False)
    apply_migrations({**os.environ, **demo_env})
    ops_port = free_port()
    env = {**os.environ, **demo_env, "WA_CONSOLE_PORT": str(CONSOLE_PORT), "WA_CONSOLE_OPS_PORT": str(ops_port)}
    log = Path(tmp_path_factory.mktemp("sso-console")) / "console.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.console"], cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{CONSOLE_PORT}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_url(driver: WebDriver, url: str, timeout: float = 20) -> None:
    try:
        WebDriverWait(driver, timeout).until(lambda d: d.current_url == url)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text[:500]
        pytest.fail(f"the browser is at {driver.current_url}, not {url}: {body}")


def test_sign_in_through_keycloak_and_sign_out_of_both(console: str, demo_env: dict[str, str]) -> None:
    password = json.loads(demo_env["WA_KEYCLOAK_DEMO_PASSWORDS"])[PERSON]
    with chrome() as driver:
        driver.get(f"{console}/signin")
        navigate(driver, lambda: driver.find_element(By.ID, "sso"))
        # Keycloak's own login page.
        assert driver.current_url.startswith(demo_env["WA_KEYCLOAK_URL"])
        driver.find_element(By.ID, "username").send_keys(PERSON)
        driver.find_element(By.ID, "password").send_keys(password)
        driver.find_element(By.ID, "kc-login").click()
        # Back through the callback's page to the search.
        wait_for_url(driver, f"{console}/search")
        who = driver.find_element(By.CSS_SELECTOR, ".who").text
        assert who == f"Signed in as {PERSON_NAME} (reader)"
        assert accessibility_problems(driver) == []
        screenshot(driver, "sso-signed-in")

        # Sign-out: Keycloak's logout (with the ID token as hint) and back to the console's sign-in page.
        driver.find_element(By.ID, "signout").click()
        wait_for_url(driver, f"{console}/signin?out=1")
        assert "You are signed out." in driver.find_element(By.TAG_NAME, "main").text
        # Keycloak's session ended too: signing in again asks for the password.
        navigate(driver, lambda: driver.find_element(By.ID, "sso"))
        assert driver.current_url.startswith(demo_env["WA_KEYCLOAK_URL"])
        assert driver.find_element(By.ID, "username").is_displayed()
        screenshot(driver, "sso-signed-out-keycloak-asks-again")
