"""Four eyes in a real browser (Debian's headless Chromium), against the real stack and the console as a process:
a DPO requests a person's erasure; a second DPO sees it counted in the header, finds it on "Waiting for your
approval" (what, who asked, why) and approves it; the erasure is then carried out. A message the send gateway held
is read as the customer would see it: its author sees no Approve button (and is refused when posting it), another
DPO approves it, and the decision record is on the gateway's topic. Screenshots of the approvals page and of a held
message go to .artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from selenium.webdriver.common.by import By

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from tests.e2e.browser import accessibility_problems, chrome, navigate, screenshot, sign_in
from tests.e2e.processes import running_services
from tests.helpers.held_sends import decision_records, held_event

pytestmark = pytest.mark.e2e

CONSOLE = "http://127.0.0.1:8083"
DPO = ("demo-dpo", "demo-dpo-token-local-only")
SECOND_DPO = ("demo-dpo-2", "demo-dpo-2-token-local-only")


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """The message the console's fixture archived before starting: its request, the decisions' topic, its person."""

    request_id: str
    decisions: str
    person: Person


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[HeldMessage]:
    """One console process for the module, over a prefix of its own where a held message is archived first, and
    publishing the held messages' decisions on a topic of its own."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    person = Person.fresh()
    request_id, decisions = asyncio.run(archive_held(demo_env, prefix, person))
    env = {
        **os.environ,
        **demo_env,
        "WA_RETENTION_S3__PREFIX": prefix,
        # The anonymous listener (the local super user), which may write the test's own decisions topic: the
        # demo's wa-actions principal may write the real one only.
        **{
            f"WA_{service}_KAFKA__{name}": value
            for service in ("RETENTION", "CONSOLE")
            for name, value in (
                ("BOOTSTRAP_SERVERS", f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"),
                ("SECURITY_PROTOCOL", "PLAINTEXT"),
            )
        },
        "WA_RETENTION_DECISIONS_TOPIC": decisions,
    }
    with running_services(env, ["console"], tmp_path_factory.mktemp("approvals-logs")):
        yield HeldMessage(request_id, decisions, person)


def test_a_second_dpo_approves_an_erasure_a_first_one_requested(held: HeldMessage) -> None:
    contact = "336" + pipeline.digits(8)  # nobody archived: the erasure completes at once, with no key to destroy
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    why = f"the person asked by e-mail, ticket {request_ref}"
    with chrome("en") as first:
        sign_in(first, CONSOLE, DPO)
        first.get(f"{CONSOLE}/dpo/erasures")
        first.find_element(By.ID, "erase-ref").send_keys(request_ref)
        first.find_element(By.ID, "erase-contact").send_keys(contact)
        # One business number: one pseudonym to erase (the shared database knows thousands of numbers).
        first.find_element(By.ID, "erase-number").send_keys(pipeline.digits(15))
        first.find_element(By.ID, "erase-reason").send_keys(why)
        navigate(first, lambda: first.find_element(By.ID, "erase"), confirm=True)
        assert first.find_element(By.ID, "notice").text == (
            f"Erasure {request_ref} requested: nothing is erased until a second DPO approves it."
        )
        first.get(f"{CONSOLE}/approvals")  # the requester is not asked to approve their own request
        assert all(request_ref not in r.text for r in first.find_elements(By.CSS_SELECTOR, "#waiting tbody tr"))
        mine = next(r for r in first.find_elements(By.CSS_SELECTOR, "#my-requests tbody tr") if request_ref in r.text)
        assert "One person (1 pseudonym)" in mine.text  # what it is about, in words

        with chrome("en") as second:
            sign_in(second, CONSOLE, SECOND_DPO)
            assert int(second.find_element(By.ID, "waiting-count").text) >= 1
            navigate(second, lambda: second.find_element(By.ID, "nav-approvals"))
            row = next(r for r in second.find_elements(By.CSS_SELECTOR, "#waiting tbody tr") if request_ref in r.text)
            assert "erasing a person" in row.text
            assert DPO[0] in row.text
            assert why in row.text
            assert contact not in second.page_source  # the person by pseudonym only
            assert accessibility_problems(second) == []
            screenshot(second, "approvals-1-waiting")
            row.find_element(By.CSS_SELECTOR, ".approve-form input[name='reason']").send_keys("ticket checked")
            navigate(second, lambda: row.find_element(By.CSS_SELECTOR, "button.approve"), confirm=True)
            assert second.find_element(By.ID, "notice").text == (
                f"Approved and carried out: erasing a person (requested by {DPO[0]})."
            )
            assert all(request_ref not in r.text for r in second.find_elements(By.CSS_SELECTOR, "#waiting tbody tr"))
            second.get(f"{CONSOLE}/dpo/erasures")
            listed = next(r for r in second.find_elements(By.CSS_SELECTOR, "tbody tr") if request_ref in r.text)
            # The keys are destroyed; the console's S3 identity may not write the erasure log, so the retention
            # service finishes it (docs/GDPR.md): in progress until then.
            assert "in_progress" in listed.text or "completed" in listed.text


HELD_BODY = "Bonjour, votre *remboursement* de _49,90 €_ est validé.\nRéférence : ```RMB-2291```\n<b>pas du HTML</b>"


async def archive_held(demo_env: dict[str, str], prefix: str, person: Person) -> tuple[str, str]:
    """A message held by the gateway, written by the first DPO, archived under ``prefix``: (the request's id, the
    decisions topic)."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="held-e2e")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    decisions = await create_topic(bootstrap, partitions=1, prefix="decisions-e2e")
    body = {
        "messaging_product": "whatsapp",
        "to": person.wa_id,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "header": {"type": "text", "text": "Service client"},
            "body": {"text": HELD_BODY},
            "footer": {"text": "Répondez avant vendredi"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "ok", "title": "C'est noté"}}]},
        },
    }
    event = held_event(
        person, body, held_until=datetime.now(UTC) + timedelta(hours=4), author=DPO[0], rules=("refund-amount",)
    )
    await pipeline.produce(bootstrap, topic, [event])
    pool = await asyncpg.create_pool(demo_env["WA_MIGRATOR_PG__DSN"], min_size=1, max_size=2)
    try:
        async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, topic, dlq, prefix)):
            await pipeline.wait_indexed(pool, {event.event_id})
        request_id = await pool.fetchval(
            "SELECT request_id::text FROM approval_requests WHERE kind = 'send' AND source_ref = $1",
            event.payload["gateway"]["send_id"],
        )
    finally:
        await pool.close()
    return str(request_id), decisions


def test_a_held_message_is_read_as_the_customer_would_and_approved_by_another_person(
    held: HeldMessage, demo_env: dict[str, str]
) -> None:
    request_id, decisions, person = held.request_id, held.decisions, held.person
    with chrome("en") as author:
        sign_in(author, CONSOLE, DPO)
        author.get(f"{CONSOLE}/approvals/{request_id}")
        assert "Bonjour, votre" in author.find_element(By.ID, "held-text").text
        assert author.find_elements(By.ID, "approve") == []  # the author is not offered to approve
        assert author.find_element(By.ID, "own-message").is_displayed()
        # ...and is refused when posting the approval all the same (four eyes: 403).
        token = author.find_element(By.CSS_SELECTOR, "input[name='csrf']").get_attribute("value")
        cookies = {c["name"]: c["value"] for c in author.get_cookies()}
        refused = httpx.post(
            f"{CONSOLE}/approvals/{request_id}/approve",
            data={"csrf": token, "reason": "my own message is fine"},
            cookies=cookies,
            headers={"Origin": CONSOLE},
        )
        assert refused.status_code == 403, refused.text

        with chrome("fr") as second:
            sign_in(second, CONSOLE, SECOND_DPO)
            second.get(f"{CONSOLE}/approvals")
            row = next(
                r
                for r in second.find_elements(By.CSS_SELECTOR, "#waiting tbody tr")
                if r.get_attribute("id") == f"request-{request_id}"
            )
            assert "refund-amount" in row.text  # what it is about, in words: the rules that held it
            navigate(second, lambda: row.find_element(By.CSS_SELECTOR, "a.button"))
            bubble = second.find_element(By.ID, "held-bubble")
            text = second.find_element(By.ID, "held-text")
            assert text.find_element(By.TAG_NAME, "strong").text == "remboursement"
            assert text.find_element(By.TAG_NAME, "em").text == "49,90 €"
            assert text.find_element(By.CSS_SELECTOR, "code.mono").text == "RMB-2291"
            assert "<b>pas du HTML</b>" in text.text  # shown as written, never as markup
            assert "Service client" in bubble.text
            assert "Répondez avant vendredi" in bubble.text
            assert second.find_element(By.ID, "held-buttons").text == "C'est noté"
            assert second.find_element(By.ID, "held-author").text == DPO[0]
            assert f"+{person.wa_id}" in second.find_element(By.ID, "held-recipient").text  # who receives it
            assert "refund-amount" in second.find_element(By.ID, "held-rules").text
            assert accessibility_problems(second) == []
            screenshot(second, "approvals-2-held-message")
            second.find_element(By.ID, "approve-reason").send_keys("montant vérifié avec le dossier")
            navigate(second, lambda: second.find_element(By.ID, "approve"))
            notice = second.find_element(By.ID, "notice").text
            assert "l'envoi d'un message retenu" in notice  # in French: the approver's language
            assert DPO[0] in notice

    (record,) = asyncio.run(decision_records(f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}", decisions, expected=1))
    assert record["decision"] == "approved"
    assert record["request_id"] == request_id
    assert record["request"]["interactive"]["body"]["text"] == HELD_BODY
    assert record["_key"] == person.phone_number_id
