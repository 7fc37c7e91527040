"""Export jobs in the console, over HTTP in-process against the real stack: a DPO opens a conversation, gives the
reason, starts an export, follows its status until done, and downloads its file through a short-lived signed link
(bytes checked against the job's SHA-256); a tampered or expired link is refused, and so is a reader.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from devtools import pipeline
from services.actions.layer import Operator
from services.evidence.links import link_key, sign_link
from tests.helpers.export_jobs import ServedConsole, archived_person, fail_leftover_jobs, served_console
from tests.helpers.reader_cases import ReaderCases

pytestmark = pytest.mark.integration

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

        ran = await worker.run_next_export(ttl_s=600, stale_s=300)
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
