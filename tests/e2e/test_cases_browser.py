"""Cases in a real browser (Debian's headless Chromium), against the real stack and the services as processes: the
DPO opens a case with a hold on a customer and assigns a reviewer; the reviewer reads the customer's conversation,
tags and notes a message for the case, and finds the note on the case page; the DPO closes the case, which releases
its hold. Screenshots of the case pages go to .artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.core.events import parse_webhook
from services.core.index import binary_keys
from services.tools.replay import post_signed
from tests.e2e.browser import accessibility_problems, chrome, navigate, screenshot, sign_in
from tests.e2e.processes import running_services

pytestmark = pytest.mark.e2e

CONSOLE = "http://127.0.0.1:8083"
READER = ("demo-reader", "demo-reader-token-local-only")
DPO = ("demo-dpo", "demo-dpo-token-local-only")
SECOND_DPO = ("demo-dpo-2", "demo-dpo-2-token-local-only")
DISPUTED = "I never agreed to the 500 EUR surcharge"
NOTE = "Customer disputes the surcharge; compare with the invoice"


async def send_and_wait(env: dict[str, str], bodies: list[bytes]) -> None:
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    async with httpx.AsyncClient(timeout=10) as client:
        for body in bodies:
            assert await post_signed(client, "http://127.0.0.1:8080/webhooks/whatsapp", body, secret) == 200
    events = [e for body in bodies for e in parse_webhook(body, raw_sha256="-", signature=None, received_at="-")]
    keys = binary_keys(e.event_id for e in events)
    pool = await asyncpg.create_pool(env["WA_RETENTION_PG__DSN"], min_size=1, max_size=1)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            indexed = await pool.fetchval(
                "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", keys
            )
            if indexed == len(events):
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the customer's messages were not indexed within 60 s")
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def customer(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[Person]:
    topic = asyncio.run(create_topic(f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}", partitions=1, prefix="e2e-cases"))
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_GROUP_ID": f"e2e-{topic}",
    }
    with running_services(env, ["ingest", "archiver", "console"], tmp_path_factory.mktemp("cases-logs")):
        person = Person(pipeline.digits(15), pipeline.digits(15), "336" + pipeline.digits(8))
        now, run = int(time.time()), uuid.uuid4().hex[:8]
        bodies = [
            pipeline.text_message(person, f"wamid.C1{run}", DISPUTED, now - 600),
            pipeline.echo(person, f"wamid.C2{run}", "We will check the invoice", now - 300),
        ]
        asyncio.run(send_and_wait(env, bodies))
        yield person


def accessible(driver: WebDriver) -> None:
    problems = accessibility_problems(driver)
    assert problems == [], f"{driver.current_url}: {problems}"


def test_the_dpo_opens_a_case_and_a_reviewer_tags_and_notes_a_message(customer: Person) -> None:
    title = f"Surcharge dispute {uuid.uuid4().hex[:6]}"
    with chrome("en") as dpo:
        sign_in(dpo, CONSOLE, DPO)
        dpo.get(f"{CONSOLE}/cases")
        accessible(dpo)
        dpo.find_element(By.ID, "case-title").send_keys(title)
        dpo.find_element(By.ID, "case-contacts").send_keys(customer.wa_id)
        dpo.find_element(By.ID, "case-holds").click()
        dpo.find_element(By.ID, "case-reviewers").send_keys(READER[0])
        dpo.find_element(By.ID, "case-what").send_keys("the customer's agreement to the surcharge")
        navigate(dpo, lambda: dpo.find_element(By.ID, "open-case"))
        heading = dpo.find_element(By.TAG_NAME, "h1").text
        case_ref = heading.removeprefix("Case ").split(":")[0]
        assert heading == f"Case {case_ref}: {title}"
        assert "active" in dpo.find_element(By.ID, "custodians").text  # the customer's hold
        assert customer.wa_id not in dpo.page_source  # the custodian shows as a pseudonym
        accessible(dpo)

        with chrome("en") as reviewer:
            sign_in(reviewer, CONSOLE, READER)
            reviewer.get(f"{CONSOLE}/cases")
            assert case_ref in reviewer.find_element(By.ID, "open-cases").text
            reviewer.get(f"{CONSOLE}/search")
            reviewer.find_element(By.ID, "keywords").send_keys("surcharge")
            reviewer.find_element(By.ID, "phone_number_id").send_keys(customer.phone_number_id)
            navigate(reviewer, lambda: reviewer.find_element(By.ID, "search"))
            navigate(reviewer, lambda: reviewer.find_element(By.CSS_SELECTOR, "#results button.open"))
            reviewer.find_element(By.ID, "reason").send_keys("review of the surcharge dispute")
            navigate(reviewer, lambda: reviewer.find_element(By.ID, "give-reason"))
            bubble = next(
                b for b in reviewer.find_elements(By.CSS_SELECTOR, "#timeline li.bubble") if DISPUTED in b.text
            )
            bubble.find_element(By.CSS_SELECTOR, "details.review summary").click()
            Select(bubble.find_element(By.NAME, "case_ref")).select_by_value(case_ref)
            bubble.find_element(By.NAME, "tag").send_keys("relevant")
            bubble.find_element(By.NAME, "note").send_keys(NOTE)
            accessible(reviewer)
            navigate(reviewer, lambda: bubble.find_element(By.CSS_SELECTOR, "form.review-form button"))
            assert reviewer.find_element(By.ID, "notice").text == f"Your review of the message was added to {case_ref}."
            reviewed = reviewer.find_element(By.ID, "reviewed")
            assert "relevant" in reviewed.text
            assert NOTE in reviewed.text
            assert READER[0] in reviewed.text
            accessible(reviewer)
            screenshot(reviewer, "cases-1-reviewer-case-page")

        dpo.get(f"{CONSOLE}/cases/{case_ref}")
        assert NOTE in dpo.find_element(By.ID, "reviewed").text
        dpo.find_element(By.ID, "close-reason").send_keys("surcharge refunded")
        navigate(dpo, lambda: dpo.find_element(By.ID, "close-case"))
        assert dpo.find_element(By.ID, "notice").text == (
            "Closing requested: the case stays open until a second DPO approves it."
        )
        assert dpo.find_element(By.ID, "case-status").text == "open"
        with chrome("en") as second:  # four eyes: another DPO approves the closing
            sign_in(second, CONSOLE, SECOND_DPO)
            second.get(f"{CONSOLE}/approvals")
            # The shared database may hold other requests: this case's is the one naming it.
            row = next(r for r in second.find_elements(By.CSS_SELECTOR, "#waiting tbody tr") if case_ref in r.text)
            assert "closing a case" in row.text
            row.find_element(By.CSS_SELECTOR, ".approve-form input[name='reason']").send_keys("refund confirmed")
            navigate(second, lambda: row.find_element(By.CSS_SELECTOR, "button.approve"), confirm=True)
            assert second.find_element(By.ID, "notice").text.startswith("Approved and carried out: closing a case")
        dpo.get(f"{CONSOLE}/cases/{case_ref}")
        assert dpo.find_element(By.ID, "case-status").text == "closed"
        assert "released" in dpo.find_element(By.ID, "custodians").text
        screenshot(dpo, "cases-2-closed-case")
