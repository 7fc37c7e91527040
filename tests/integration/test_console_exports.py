"""Export jobs in the console, over HTTP in-process against the real stack: a DPO opens a conversation, gives the
reason, starts an export, follows its status until done, and downloads its file through a short-lived signed link
(bytes checked against the job's SHA-256); a tampered or expired link is refused, and so is a reader.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import pipeline
from services.actions.layer import Operator
from services.core.refusals import InvalidRequest
from services.evidence.case_export import verify_case
from services.evidence.links import link_key, sign_link
from services.governance.cases import CustodianSpec
from tests.helpers.approvals import approved
from tests.helpers.export_jobs import ServedConsole, archived_person, fail_leftover_jobs, served_console
from tests.helpers.reader_cases import ReaderCases

pytestmark = [pytest.mark.integration, pytest.mark.export_queue]

DPO = ("test-dpo", pipeline.DPO_TOKEN)
READER = ("test-reader", pipeline.READER_TOKEN)


@pytest.fixture
async def served(demo_env: dict[str, str]) -> AsyncIterator[ServedConsole]:
    async with served_console(demo_env) as console:
        yield console


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, who: tuple[str, str]) -> str:
    page = await client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token
    answer = await client.post(
        "/signin", data={"signin_token": token.group(1), "name": who[0], "token": who[1], "timezone": "UTC"}
    )
    assert answer.status_code == 303, answer.text
    return csrf_of((await client.get("/search")).text)


async def test_a_dpo_exports_a_conversation_and_downloads_it_through_a_short_lived_link(
    served: ServedConsole, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    url, worker = served.url, served.worker
    await fail_leftover_jobs(pg_pool)
    _person, ref = await archived_person(demo_env, pg_pool, served)
    reason = f"dispute {uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        csrf = await sign_in(client, DPO)
        # No export before the reason is given for the conversation.
        early = await client.post("/exports", data={"csrf": csrf, "subject_ref": ref, "format_json": "1"})
        assert early.status_code == 400
        opened = await client.post("/conversation/reason", data={"csrf": csrf, "subject_ref": ref, "reason": reason})
        assert 'id="export-form"' in opened.text
        started = await client.post("/exports", data={"csrf": csrf, "subject_ref": ref, "format_json": "1"})
        assert started.status_code == 303
        job_url = started.headers["location"]
        job_id = job_url.rsplit("/", 1)[1]
        queued = await client.get(job_url)
        assert "<progress" in queued.text
        assert 'data-finished="false"' in queued.text
        assert (await client.get(f"{job_url}/status")).json()["finished"] is False

        ran = await worker.run_next_export(ttl_s=600, stale_s=300, job_id=job_id)  # not another test's
        assert ran is not None
        assert (ran.job_id, ran.status) == (job_id, "done")
        status = (await client.get(f"{job_url}/status")).json()
        assert status == {"status": "done", "step": "done", "done": 1, "total": 1, "finished": True}
        page = await client.get(job_url)
        link = re.search(r'href="(/exports/[^"]+/files/[^"]+)"', page.text)
        assert link, page.text
        href = link.group(1).replace("&amp;", "&")
        download = await client.get(href)
        assert download.status_code == 200
        assert download.headers["content-disposition"].startswith("attachment;")
        (file,) = ran.files
        assert hashlib.sha256(download.content).hexdigest() == file.sha256
        assert download.content.startswith(b"{")

        # A tampered link, another file's signature, an expired link: the same refusal.
        name = file.name
        tampered = href.replace("sig=", "sig=0")
        expired = sign_link(link_key(worker.access.pepper), job_id=job_id, name=name, now=time.time() - 600, ttl_s=300)
        for refused in (
            tampered,
            href.replace(f"expires={href.split('expires=')[1].split('&')[0]}", f"expires={int(time.time()) + 3600}"),
            f"/exports/{job_id}/files/{name}?expires={expired.expires}&sig={expired.signature}",
            f"/exports/{job_id}/files/{name}",
        ):
            assert (await client.get(refused)).status_code == 404, refused
        listed = await client.get("/exports")
        assert job_id[:8] in listed.text
    # Someone else's session with the valid link: refused (a reader follows their own jobs only).
    async with httpx.AsyncClient(base_url=url, timeout=60) as other:
        await sign_in(other, READER)
        assert (await other.get(href)).status_code == 404
    downloads = await pg_pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'export.downloaded' AND details->>'job_id' = $1", job_id
    )
    assert downloads == 1


async def test_a_dpo_requests_a_case_export_in_the_console_a_second_dpo_approves_it_and_it_downloads(
    served: ServedConsole, demo_env: dict[str, str], pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    worker = served.worker
    await fail_leftover_jobs(pg_pool)
    _person, ref = await archived_person(demo_env, pg_pool, served)
    dpo = Operator(DPO[0], "dpo")
    case = await worker.open_case(
        dpo, title="Refund dispute", custodians=[CustodianSpec(kind="person", subject_ref=ref)]
    )
    case_url = f"/cases/{case.case_ref}"
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        csrf = await sign_in(client, DPO)
        page = (await client.get(case_url)).text
        assert 'id="case-export-form"' in page
        assert "wa-archive approvals approve ID" in page  # says where and how it is approved
        asked = await client.post(
            f"{case_url}/export",
            data={"csrf": csrf, "reason": "court order 77", "format_jsonl": "on", "format_json": "on"},
        )
        assert asked.status_code == 200, asked.text
        found = re.search(r'class="case-export" data-request="([^"]+)"', asked.text)
        assert found, asked.text
        request_id = found.group(1)
        assert f"wa-archive approvals approve {request_id}" in asked.text  # pending: who acts, and how
        assert re.search(r"\d+ records, 1 bag<", asked.text), asked.text  # the size it announced to the approver

        # A second DPO approves it where no signing key is (the console, here its actions): the export worker,
        # which holds the key, writes and signs it.
        job = await approved(worker, request_id)
        assert (job.job_id, job.scope, job.request_ref) == (request_id, "case", case.case_ref)
        key = Ed25519PrivateKey.generate()
        # This job, not another test's (the shared database may hold other runs' queued jobs).
        ran = await worker.run_next_export(ttl_s=600, stale_s=300, signing_key=key, job_id=request_id)
        assert ran is not None
        assert (ran.job_id, ran.status, [f.name for f in ran.files]) == (
            request_id,
            "done",
            [f"case-{case.case_ref}.zip"],
        )
        page = (await client.get(case_url)).text
        assert f'href="/exports/{request_id}" class="case-export-job">done' in page
        job_page = (await client.get(f"/exports/{request_id}")).text
        link = re.search(r'href="(/exports/[^"]+/files/[^"]+)"', job_page)
        assert link, job_page
        download = await client.get(link.group(1).replace("&amp;", "&"))
        assert download.status_code == 200
    (tmp_path / "case.zip").write_bytes(download.content)
    with zipfile.ZipFile(tmp_path / "case.zip") as bundle:
        bundle.extractall(tmp_path)
    root = tmp_path / f"case-{case.case_ref}"
    assert not verify_case(root, public_key=key.public_key()).failures
    (bag,) = [p for p in root.iterdir() if p.is_dir()]
    assert "the refund is approved, ref 4711" in (bag / "data" / "events.jsonl").read_text()
    assert not list((bag / "data").glob("*.pdf"))  # the formats asked for only
    # Carried out as the approver, on the requester's behalf: both names in the export's audit rows.
    details = await pg_pool.fetchval(
        "SELECT details::text FROM audit_log WHERE action = 'export' AND details->>'case_ref' IS NULL"
        " AND details->'approval'->>'request_id' = $1 LIMIT 1",
        request_id,
    )
    assert details is not None
    assert orjson.loads(details)["approval"]["requester"] == DPO[0]

    # A case export into a folder is still written where it is approved: refused without the signing key.
    folder = await worker.request_case_export(dpo, case.case_ref, tmp_path / "elsewhere", reason="court order 78")
    with pytest.raises(InvalidRequest, match="on the machine that holds the key"):
        await approved(worker, folder)


async def test_a_reader_exports_the_results_of_their_search(
    served: ServedConsole, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """From the search page: the results' export form carries the search, a reason and a format; the job holds the
    hits the reader saw (their case's scope), and the reader downloads it."""
    url, worker = served.url, served.worker
    await fail_leftover_jobs(pg_pool)
    _person, ref = await archived_person(demo_env, pg_pool, served)
    cases = ReaderCases(worker)
    case_ref = await cases.cover(READER[0], subject_ref=ref)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            csrf = await sign_in(client, READER)
            found = await client.post("/search", data={"csrf": csrf, "keywords": "refund"})
            assert 'id="export-search"' in found.text
            form = re.search(r'<form method="post" action="/exports/search".*?</form>', found.text, re.S)
            assert form
            carried = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', form.group(0)))
            assert carried == {"csrf": csrf, "keywords": "refund"}
            started = await client.post(
                "/exports/search", data={**carried, "reason": "dispute 12: what was said", "export_format": "jsonl"}
            )
            assert started.status_code == 303, started.text
            job_id = started.headers["location"].rsplit("/", 1)[1]
            ran = await worker.run_next_export(ttl_s=600, stale_s=300, job_id=job_id)  # not another test's
            assert ran is not None
            assert (ran.job_id, ran.status, ran.scope, ran.requested_by) == (job_id, "done", "search", READER[0])
            # Exactly the hits the results page showed the reader (their cases' scope), each once.
            shown = re.findall(r'<tr class="hit" data-event="([0-9a-f]+)"', found.text)
            assert sorted(ran.event_ids) == sorted(set(shown))
            assert ran.selection is not None
            assert "refund" not in str(ran.selection)
            page = await client.get(f"/exports/{job_id}")
            link = re.search(r'href="(/exports/[^"]+/files/[^"]+)"', page.text)
            assert link, page.text
            download = await client.get(link.group(1).replace("&amp;", "&"))
            assert download.status_code == 200
            assert hashlib.sha256(download.content).hexdigest() == ran.files[0].sha256

            # The same from the case's saved search: the job names the case and the search, not the words.
            saved = await worker.save_search(Operator(READER[0], "reader"), case_ref, keywords="refund")
            form_data = {"csrf": csrf, "search_id": saved.search_id, "reason": "dispute 12", "export_format": "pdf"}
            ran_page = await client.post(f"/cases/{case_ref}/searches/run", data=form_data)
            assert 'id="export-search"' in ran_page.text
            started = await client.post(f"/cases/{case_ref}/searches/export", data=form_data)
            assert started.status_code == 303, started.text
            job = await worker.export_job(Operator(READER[0], "reader"), started.headers["location"].rsplit("/", 1)[1])
            await pg_pool.execute("UPDATE export_jobs SET status = 'failed' WHERE job_id = $1::uuid", job.job_id)
            assert job.selection is not None
            assert (job.selection["case_ref"], job.selection["saved_search"]) == (case_ref, saved.search_id)
            # Exactly what the saved search finds: this case's custodian only (the reader may have other cases).
            hits = await worker.run_saved_search(Operator(READER[0], "reader"), case_ref, saved.search_id)
            assert sorted(job.event_ids) == sorted(hit.event_id for hit in hits)
            assert set(job.event_ids) <= set(ran.event_ids)
    finally:
        await cases.close()
