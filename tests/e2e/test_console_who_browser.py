"""The conversation page names who it is with, in a real browser (Debian's headless Chromium), once the reason is
given: the person's latest profile name (a hostile one: markup, an RTL override, emoji), the names seen before,
their number and the business number, all drawn from the decrypted records; before the reason, nothing of them.
The search results then label that conversation with the name too.

The archive is written by the archiver in-process (a fresh topic and bucket prefix) and the console runs as its own
process on free ports, so the module clashes with no other test's ports. Screenshots go to .artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from devtools import pipeline
from devtools.broker import create_topic
from devtools.devrun import apply_migrations
from devtools.pipeline import Person
from devtools.samples import REPO_ROOT
from services.review.correspondent import readable_number, shown_text
from tests.e2e.browser import accessibility_problems, chrome, navigate, screenshot
from tests.helpers.reader_cases import reader_case

pytestmark = pytest.mark.e2e

READER = ("demo-reader", "demo-reader-token-local-only")
# The latest profile name: markup, a right-to-left override (which would show "Eve" reversed and move what
# follows), emoji. It must show as text, in logical order, and run nothing.
HOSTILE = '<img src=x onerror=alert(1)>"\u202eEve 🎉'
EARLIER = "Marie Dupont"
LONG = "Marie-" + "Dupont" * 40  # an earlier name of 246 characters: cut, and the page does not overflow
BUSINESS_NUMBER = "15550001111"  # what devtools.pipeline.echo sends from


@dataclass(frozen=True)
class Archived:
    console: str
    person: Person


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def named_message(person: Person, name: str, wamid: str, body: str, ts: int) -> bytes:
    return pipeline.envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": name}, "wa_id": person.wa_id}],
            "messages": [
                {"from": person.wa_id, "id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}}
            ],
        },
    )


def bodies_of(person: Person, now: int) -> list[bytes]:
    t = now - 3600
    return [
        named_message(person, LONG, "wamid.W0", "Bonjour", t - 600),
        named_message(person, EARLIER, "wamid.W1", "Je confirme la commande 9120", t),
        pipeline.revoke(person, "wamid.W1R", "wamid.W1", t + 61),  # 61 s: "1 minute, 1 second"
        pipeline.echo(person, "wamid.W2", "Bien reçu", t + 120),
        named_message(person, HOSTILE, "wamid.W3", "Merci", t + 300),
    ]


async def archive(demo_env: dict[str, str], prefix: str, person: Person) -> None:
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="who")
    dlq = await create_topic(bootstrap, partitions=1, prefix="who-dlq")
    events = pipeline.events_of(bodies_of(person, int(time.time())))
    await pipeline.produce(bootstrap, topic, events)
    pool = await asyncpg.create_pool(demo_env["WA_RETENTION_PG__DSN"], min_size=1, max_size=1)
    try:
        async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, topic, dlq, prefix)):
            await pipeline.wait_indexed(pool, {e.event_id for e in events})
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[Archived]:
    prefix = f"test/who-{uuid.uuid4().hex[:8]}"
    person = Person(pipeline.digits(15), pipeline.digits(15), "336" + pipeline.digits(8))
    apply_migrations({**os.environ, **demo_env})  # as `wa-archive migrate` does before the services start
    asyncio.run(archive(demo_env, prefix, person))
    port, ops_port = free_port(), free_port()
    env = {
        **os.environ,
        **demo_env,
        "WA_CONSOLE_PORT": str(port),
        "WA_CONSOLE_OPS_PORT": str(ops_port),
        "WA_RETENTION_S3__PREFIX": prefix,
    }
    log = Path(tmp_path_factory.mktemp("who-console")) / "console.log"
    with log.open("wb") as output:
        console = subprocess.Popen(
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
            assert console.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        with reader_case(READER[0], [person.phone_number_id]):  # the reader reviews the person's number
            yield Archived(f"http://127.0.0.1:{port}", person)
    finally:
        console.terminate()
        console.wait(timeout=30)


def open_conversation(driver: WebDriver, archived: Archived) -> str:
    """Sign in, list the person's messages by business number, open the conversation; returns the reason page's
    visible text."""
    driver.get(f"{archived.console}/signin")
    driver.find_element(By.ID, "name").send_keys(READER[0])
    driver.find_element(By.ID, "token").send_keys(READER[1])
    navigate(driver, lambda: driver.find_element(By.ID, "signin"))
    driver.find_element(By.ID, "phone_number_id").send_keys(archived.person.phone_number_id)
    navigate(driver, lambda: driver.find_element(By.ID, "search"))
    navigate(driver, lambda: driver.find_element(By.CSS_SELECTOR, "#results button.open"))
    return str(driver.find_element(By.TAG_NAME, "body").text)


def give_reason(driver: WebDriver) -> None:
    driver.find_element(By.ID, "reason").send_keys(f"client dispute {uuid.uuid4().hex[:6]}")
    navigate(driver, lambda: driver.find_element(By.ID, "give-reason"))


def nothing_personal(driver: WebDriver, archived: Archived, visible: str) -> None:
    source = driver.page_source
    for personal in ("Eve", "Marie", "Dupont", archived.person.wa_id, "Je confirme"):
        assert personal not in source
    pseudonym = driver.find_element(By.CSS_SELECTOR, "input[name=subject_ref]").get_attribute("value")
    assert pseudonym
    assert pseudonym[:12] not in visible  # a form field, never shown


def shows_no_markup(driver: WebDriver) -> None:
    injected: Any = driver.execute_script("return document.querySelectorAll('#who img, img[src=x]').length")
    assert injected == 0
    overflow: Any = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # a 246-character name wraps instead of widening the page


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        pytest.param(
            "en-GB,en",
            {
                "reason": "Why do you open this conversation?",
                "labels": ["Number", "Also seen as", "Business number"],
                "phone id": "phone number ID",
                "deleted": "(1 minute, 1 second after it was sent)",
                "pseudonym": "Pseudonym",
            },
            id="en",
        ),
        pytest.param(
            "fr-FR,fr",
            {
                "reason": "Pourquoi ouvrez-vous cette conversation ?",
                "labels": ["Numéro", "Également vu sous le nom", "Numéro de l'entreprise"],
                "phone id": "identifiant du numéro",
                "deleted": "(1 minute et 1 seconde après l'envoi)",
                "pseudonym": "Pseudonyme",
            },
            id="fr",
        ),
    ],
)
def test_after_the_reason_the_header_names_the_person_and_the_business_number(
    archived: Archived, language: str, expected: dict[str, Any]
) -> None:
    tag = language[:2]
    with chrome(language) as driver:
        visible = open_conversation(driver, archived)
        assert driver.find_element(By.TAG_NAME, "h1").text == expected["reason"]
        nothing_personal(driver, archived, visible)
        screenshot(driver, f"console-who-1-reason-{tag}")

        give_reason(driver)
        assert driver.find_element(By.TAG_NAME, "h1").text == shown_text(HOSTILE)  # as text, the override gone
        assert "Eve" not in driver.title  # a title lands in the browser's history
        header = driver.find_element(By.ID, "who").text.replace("\u00a0", " ").replace("\u202f", " ")
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#who dt")]
        assert labels == [*expected["labels"], expected["pseudonym"]]
        assert str(readable_number(archived.person.wa_id)) in header
        # Newest first: the revoke's contact (devtools' "Test Person"), then the names before it.
        earlier = driver.find_element(By.ID, "who-earlier").text
        assert earlier == ", ".join(["Test Person", EARLIER, str(shown_text(LONG))])
        business = driver.find_element(By.ID, "who-business").text
        assert business.startswith(readable_number(BUSINESS_NUMBER) or "")
        assert f"{expected['phone id']} {archived.person.phone_number_id}" in business
        deleted = driver.find_element(By.CSS_SELECTOR, ".badge.deleted").text.replace("\u00a0", " ")
        assert expected["deleted"] in deleted
        shows_no_markup(driver)
        assert accessibility_problems(driver) == []
        screenshot(driver, f"console-who-2-header-{tag}")

        # Back in the search, the conversation opened in this session is labelled with the name too.
        navigate(driver, lambda: driver.find_element(By.CSS_SELECTOR, "main a[href='/search']"))
        driver.find_element(By.ID, "phone_number_id").send_keys(archived.person.phone_number_id)
        navigate(driver, lambda: driver.find_element(By.ID, "search"))
        label = driver.find_element(By.CSS_SELECTOR, "#results h3 bdi.person")
        assert label.text == shown_text(HOSTILE)
        shows_no_markup(driver)
        screenshot(driver, f"console-who-3-search-{tag}")
