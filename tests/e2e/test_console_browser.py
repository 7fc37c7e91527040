"""The review console in a real browser (Debian's headless Chromium through chromedriver), against the real stack
and the services as processes, as a community manager and the DPO use it in a crisis.

A fresh customer's crisis (an order confirmation deleted for everyone, a price edited by the business, a photo
deleted, two messages made of markup) is sent to ingest as signed webhooks, archived by the archiver (the photo
fetched from the Graph API stand-in), then found and read in French through the console. Each scenario saves a
screenshot of its final page under .artifacts/screenshots/ (git-ignored) for a reviewer.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from devtools import pipeline
from devtools.broker import create_topic
from devtools.demo_media import PARCEL_PHOTO_ID, demo_sha256
from devtools.pipeline import Person
from services.core.events import parse_webhook
from services.core.index import binary_keys
from services.tools.replay import post_signed
from tests.e2e.browser import accessibility_problems, chrome, navigate, screenshot, tab_order
from tests.e2e.processes import running_services
from tests.helpers.reader_cases import reader_case

pytestmark = pytest.mark.e2e

CONSOLE = "http://127.0.0.1:8083"
READER = ("demo-reader", "demo-reader-token-local-only")
DPO = ("demo-dpo", "demo-dpo-token-local-only")
ORDER = "Je confirme la commande 4471 : 40 unités, facture d'Électricité comprise"
PRICE, NEW_PRICE = "Le prix est de 1 200 € HT", "Le prix est de 12 000 € HT"
CAPTION = "Photo du colis abîmé à la réception"
MARKUP = ['<script>alert("xss")</script>', "<img src=x onerror=alert(1)>"]


@dataclass
class Crisis:
    person: Person
    reason: str


def crisis_bodies(person: Person, now: int) -> list[bytes]:
    t = now - 3600
    run = uuid.uuid4().hex[:8]
    return [
        pipeline.text_message(person, f"wamid.B1{run}", ORDER, t),
        pipeline.revoke(person, f"wamid.B1R{run}", f"wamid.B1{run}", t + 240),
        pipeline.echo(person, f"wamid.B2{run}", PRICE, t + 300),
        pipeline.status(person, f"wamid.B2{run}", "read", t + 330),
        pipeline.edit(person, f"wamid.B2E{run}", f"wamid.B2{run}", NEW_PRICE, t + 400),
        pipeline.image(
            person,
            f"wamid.B3{run}",
            t + 500,
            id=PARCEL_PHOTO_ID,
            mime_type="image/png",
            sha256=demo_sha256(PARCEL_PHOTO_ID),
            caption=CAPTION,
        ),
        pipeline.revoke(person, f"wamid.B3R{run}", f"wamid.B3{run}", t + 620),
        *(pipeline.text_message(person, f"wamid.BX{i}{run}", text, t + 700 + i) for i, text in enumerate(MARKUP)),
        pipeline.text_message(person, f"wamid.B4{run}", "Merci, bonne journée", t + 800),
    ]


async def send_and_wait(env: dict[str, str], bodies: list[bytes]) -> None:
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    async with httpx.AsyncClient(timeout=10) as client:
        for body in bodies:
            status = await post_signed(client, "http://127.0.0.1:8080/webhooks/whatsapp", body, secret)
            assert status == 200
    events = [e for body in bodies for e in parse_webhook(body, raw_sha256="-", signature=None, received_at="-")]
    keys = binary_keys(e.event_id for e in events)
    pool = await asyncpg.create_pool(env["WA_RETENTION_PG__DSN"], min_size=1, max_size=1)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            indexed = await pool.fetchval(
                "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", keys
            )
            media = await pool.fetchval(
                "SELECT count(*) FROM archived_media WHERE event_id = ANY($1::bytea[]) AND status = 'archived'", keys
            )
            if indexed == len(events) and media == 1:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{indexed}/{len(events)} events indexed, {media} media archived after 60 s")
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def crisis(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[Crisis]:
    topic = asyncio.run(create_topic(f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}", partitions=1, prefix="e2e-console"))
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_GROUP_ID": f"e2e-{topic}",
    }
    names = ["graph-api", "ingest", "archiver", "console"]
    with running_services(env, names, tmp_path_factory.mktemp("console-logs")):
        person = Person(pipeline.digits(15), pipeline.digits(15), "336" + pipeline.digits(8))
        asyncio.run(send_and_wait(env, crisis_bodies(person, int(time.time()))))
        with reader_case(READER[0], [person.phone_number_id]):  # the reader reviews the person's number
            yield Crisis(person, f"Litige client commande 4471 ({uuid.uuid4().hex[:6]})")


def sign_in(driver: WebDriver, who: tuple[str, str]) -> None:
    driver.get(f"{CONSOLE}/signin")
    driver.find_element(By.ID, "name").send_keys(who[0])
    driver.find_element(By.ID, "token").send_keys(who[1])
    navigate(driver, lambda: driver.find_element(By.ID, "signin"))
    assert driver.current_url == f"{CONSOLE}/search"


def no_alert(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 — the property raises when no alert is open
    except NoAlertPresentException:
        return True
    return False


def accessible(driver: WebDriver) -> None:
    problems = accessibility_problems(driver)
    assert problems == [], f"{driver.current_url}: {problems}"


def search(driver: WebDriver, person: Person, keywords: str) -> None:
    driver.find_element(By.ID, "keywords").send_keys(keywords)
    driver.find_element(By.ID, "phone_number_id").send_keys(person.phone_number_id)
    navigate(driver, lambda: driver.find_element(By.ID, "search"))


def text_of(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_a_reader_finds_and_reads_the_deleted_message_in_french(crisis: Crisis) -> None:
    with chrome("fr-FR,fr") as driver:
        sign_in(driver, READER)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Rechercher dans l'archive"
        accessible(driver)
        # A French keyword typed without its accents.
        search(driver, crisis.person, "electricite")
        results = driver.find_element(By.ID, "results")
        assert "dans 1 conversation." in results.text  # singular: one conversation
        assert len(results.find_elements(By.CSS_SELECTOR, "button.open")) == 1  # one per conversation
        assert "supprimé pour tous" in results.text
        assert "4471" not in text_of(driver)  # metadata only
        accessible(driver)
        screenshot(driver, "console-1-search-results")

        navigate(driver, lambda: results.find_element(By.CSS_SELECTOR, "button.open"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "Pourquoi ouvrez-vous cette conversation ?"
        page = driver.page_source
        for content in (ORDER, PRICE, CAPTION, "Merci, bonne journée"):
            assert content not in page
        assert "/media/" not in page
        accessible(driver)
        screenshot(driver, "console-2-reason")

        driver.find_element(By.ID, "reason").send_keys(crisis.reason)
        driver.find_element(By.ID, "case_ref").send_keys("DOSSIER-4471")
        navigate(driver, lambda: driver.find_element(By.ID, "give-reason"))
        timeline = driver.find_element(By.ID, "timeline")
        # The search hit is the focused message, highlighted, with its original text and deletion badge.
        focused = driver.switch_to.active_element
        assert "anchor" in (focused.get_attribute("class") or "")
        assert ORDER in focused.text
        assert "Contient vos mots" in focused.text
        assert "Supprimé pour tous par le client à" in focused.text
        assert "(4 minutes après l'envoi)" in focused.text
        # The edited price: the current text, and its history.
        assert NEW_PRICE in timeline.text
        history = timeline.find_element(By.CSS_SELECTOR, "details.history")
        history.click()
        assert PRICE in history.text
        # The deleted photo, decrypted and shown.
        photo = timeline.find_element(By.CSS_SELECTOR, "img.media")
        assert photo.get_attribute("alt") == CAPTION
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", photo) == 160
        # Markup is shown as text, and runs nothing.
        texts = [e.text for e in timeline.find_elements(By.CSS_SELECTOR, "p.text")]
        for markup in MARKUP:
            assert markup in texts
        assert no_alert(driver)
        assert (
            driver.execute_script("return document.querySelectorAll('#timeline script, #timeline img[src=x]').length")
            == 0
        )
        accessible(driver)
        screenshot(driver, "console-3-timeline")


def test_the_dpo_sees_the_audit_rows_of_those_views(crisis: Crisis) -> None:
    with chrome("en-GB,en") as driver:
        sign_in(driver, DPO)
        navigate(driver, lambda: driver.find_element(By.LINK_TEXT, "Audit log"))
        driver.find_element(By.ID, "a-actor").send_keys(READER[0])
        navigate(driver, lambda: driver.find_element(By.ID, "filter"))
        rows = [
            row
            for row in driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr.audit-row")
            if crisis.reason in row.find_element(By.CSS_SELECTOR, "td.reason").text
        ]
        actions = sorted(row.find_element(By.CSS_SELECTOR, "td.action").text for row in rows)
        # The keyword check's candidates, the rest of the page, the photo.
        assert actions == ["media", "retrieval", "retrieval"]
        for row in rows:
            assert row.find_element(By.CSS_SELECTOR, "td.actor").text == READER[0]
            assert row.find_element(By.CSS_SELECTOR, "td.reason").text == f"{crisis.reason} [DOSSIER-4471]"
            assert row.find_element(By.TAG_NAME, "time").get_attribute("datetime")
        accessible(driver)
        screenshot(driver, "console-4-dpo-audit")
        for link, heading in (("Legal holds", "Legal holds"), ("Erasure requests", "Erasure requests")):
            navigate(driver, functools.partial(driver.find_element, By.LINK_TEXT, link))
            assert driver.find_element(By.TAG_NAME, "h1").text == heading
            accessible(driver)
        navigate(driver, lambda: driver.find_element(By.LINK_TEXT, "Retention"))
        navigate(driver, lambda: driver.find_element(By.ID, "dry-run"))
        assert driver.find_element(By.ID, "objects").text.replace(",", "").isdigit()
        accessible(driver)
        screenshot(driver, "console-5-dpo-dry-run")


def test_a_reader_gets_no_dpo_page_and_a_forged_form_is_refused(crisis: Crisis) -> None:
    with chrome("en") as driver:
        sign_in(driver, READER)
        nav = driver.find_element(By.CSS_SELECTOR, "header nav").text
        # No DPO page is offered (the cases: those assigned to them; the exports: those of their own searches).
        assert nav == "Search\nCases\nExports"
        driver.get(f"{CONSOLE}/dpo/audit")
        assert "This page is for the data protection officer." in text_of(driver)
        assert crisis.reason not in driver.page_source
        screenshot(driver, "console-6-reader-forbidden")

        driver.get(f"{CONSOLE}/search")
        driver.execute_script("document.querySelector('#search-form input[name=csrf]').remove()")
        driver.find_element(By.ID, "keywords").send_keys("commande")
        navigate(driver, lambda: driver.find_element(By.ID, "search"))
        assert "The form has expired" in text_of(driver), text_of(driver)
        assert driver.find_elements(By.ID, "results") == []
        screenshot(driver, "console-7-forged-form")


def test_sign_in_keyboard_order_language_switch_and_sign_out(crisis: Crisis) -> None:
    with chrome("fr") as driver:
        driver.get(f"{CONSOLE}/signin")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Connexion"
        accessible(driver)
        order: list[Any] = tab_order(driver, 7)
        assert order == [
            'a "Aller au contenu"',
            "select#locale",
            'button "Changer de langue"',
            "button#sso",  # single sign-on first; the local demo's named tokens after it
            "input#name",
            "input#token",
            "button#signin",
        ]
        Select(driver.find_element(By.ID, "locale")).select_by_value("en")
        navigate(driver, lambda: driver.find_element(By.CSS_SELECTOR, "form[action='/language'] button"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "Sign in"
        sign_in(driver, READER)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Search the archive"
        navigate(driver, lambda: driver.find_element(By.ID, "signout"))
        assert "You are signed out." in text_of(driver)
        driver.get(f"{CONSOLE}/search")
        assert driver.current_url.startswith(f"{CONSOLE}/signin")
        screenshot(driver, "console-8-signed-out")
