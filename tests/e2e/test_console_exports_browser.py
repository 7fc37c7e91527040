"""In Chromium: a DPO opens a conversation, gives the reason, starts an export, watches its progress bar until the
job is done (console.js polls its status and loads the page again with the links), downloads the file (its bytes
are the job's), and an expired or tampered link is refused. The console is served in-process on a free port and
the export worker runs in the same event loop, started once the browser has seen the job queued; the browser's
steps run in a thread so that the loop keeps serving it. Then the search's results are exported from the search
page (JSON Lines) and downloaded the same way. Screenshots: .artifacts/screenshots/console-export-*.png.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import time
import zipfile

import asyncpg
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from devtools import pipeline
from devtools.pipeline import Person
from services.evidence.links import link_key, sign_link
from services.retention.service import run_exports
from tests.e2e.browser import chrome, navigate, screenshot
from tests.helpers.export_jobs import archived_person, fail_leftover_jobs, served_console

pytestmark = pytest.mark.e2e

DPO = ("test-dpo", pipeline.DPO_TOKEN)
FETCH_JS = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: "same-origin"}).then(async (answer) => {
  const bytes = new Uint8Array(await answer.arrayBuffer());
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  done([answer.status, btoa(binary)]);
}).catch((e) => done([0, String(e)]));
"""


def start_export(driver: WebDriver, url: str, person: Person) -> str:
    """Sign in as the DPO, find the person's conversation, give the reason, start the export; the job's URL."""
    driver.get(f"{url}/signin")
    driver.find_element(By.ID, "name").send_keys(DPO[0])
    driver.find_element(By.ID, "token").send_keys(DPO[1])
    navigate(driver, lambda: driver.find_element(By.ID, "signin"))
    driver.find_element(By.ID, "keywords").send_keys("refund")
    driver.find_element(By.ID, "phone_number_id").send_keys(person.phone_number_id)
    navigate(driver, lambda: driver.find_element(By.ID, "search"))
    navigate(driver, lambda: driver.find_element(By.CSS_SELECTOR, "button.open"))
    assert not driver.find_elements(By.ID, "export-form"), "no export before the reason"
    driver.find_element(By.ID, "reason").send_keys("Art. 15 request, ticket 8812")
    navigate(driver, lambda: driver.find_element(By.ID, "give-reason"))
    screenshot(driver, "console-export-1-conversation")
    navigate(driver, lambda: driver.find_element(By.ID, "export-start"))
    assert "/exports/" in driver.current_url
    bar = driver.find_element(By.ID, "export-progress")
    assert bar.get_attribute("value") == "0"
    screenshot(driver, "console-export-2-queued")
    return str(driver.current_url)


def finish_and_download(driver: WebDriver) -> tuple[str, bytes, list[int]]:
    """Wait until the page shows the job done (loaded again by console.js), download its file in the browser;
    the file's link, its bytes, and the answers to that link tampered and expired."""
    WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: d.find_elements(By.ID, "export-files"))
    bar = driver.find_element(By.ID, "export-progress")
    assert bar.get_attribute("value") == bar.get_attribute("max")
    screenshot(driver, "console-export-3-done")
    href = str(driver.find_element(By.CSS_SELECTOR, "#export-files a").get_attribute("href"))
    status, body = driver.execute_async_script(FETCH_JS, href)
    assert status == 200, body
    tampered = href.replace("sig=", "sig=f")
    refusals = [driver.execute_async_script(FETCH_JS, tampered)[0]]
    driver.get(tampered)
    screenshot(driver, "console-export-4-tampered-link")
    return href, base64.b64decode(body), refusals


def export_search_results(driver: WebDriver, url: str, person: Person) -> bytes:
    """The same search again, then *Export these results* as JSON Lines with a reason; once the job is done, the
    downloaded file's bytes."""
    driver.get(f"{url}/search")
    driver.find_element(By.ID, "keywords").send_keys("refund")
    driver.find_element(By.ID, "phone_number_id").send_keys(person.phone_number_id)
    navigate(driver, lambda: driver.find_element(By.ID, "search"))
    driver.find_element(By.ID, "export-reason").send_keys("dispute 12: the refund promised")
    Select(driver.find_element(By.ID, "export-format")).select_by_value("jsonl")
    screenshot(driver, "console-export-5-search-results")
    navigate(driver, lambda: driver.find_element(By.ID, "export-results"))
    assert "/exports/" in driver.current_url
    WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: d.find_elements(By.ID, "export-files"))
    screenshot(driver, "console-export-6-search-export-done")
    href = str(driver.find_element(By.CSS_SELECTOR, "#export-files a").get_attribute("href"))
    status, body = driver.execute_async_script(FETCH_JS, href)
    assert status == 200, body
    return base64.b64decode(body)


async def test_a_dpo_exports_in_the_browser_and_downloads_through_a_short_lived_link(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    await fail_leftover_jobs(pg_pool)
    async with served_console(demo_env) as served:
        person, _ref = await archived_person(demo_env, pg_pool, served)
        settings = served.settings.model_copy(update={"export_poll_s": 0.2})
        with chrome("en") as driver:
            job_url = await asyncio.to_thread(start_export, driver, served.url, person)
            worker = asyncio.create_task(run_exports(served.worker, settings))
            try:
                href, body, refusals = await asyncio.to_thread(finish_and_download, driver)
                job_id = job_url.rsplit("/", 1)[1]
                row = await pg_pool.fetchrow("SELECT output, status FROM export_jobs WHERE job_id = $1::uuid", job_id)
                assert row is not None
                assert row["status"] == "done"
                files = orjson.loads(row["output"])
                assert sorted(f["name"].rsplit(".", 1)[1] for f in files) == ["html", "json"]
                (file,) = [f for f in files if f"/files/{f['name']}?" in href]
                assert hashlib.sha256(body).hexdigest() == file["sha256"]
                assert len(body) == file["size"]
                assert orjson.loads(body)["message_count"] >= 3
                assert refusals == [404]
                key = link_key(served.worker.access.pepper)
                old = sign_link(key, job_id=job_id, name=file["name"], now=time.time() - 600, ttl_s=300)
                expired = f"/exports/{job_id}/files/{file['name']}?expires={old.expires}&sig={old.signature}"
                answer = await asyncio.to_thread(driver.execute_async_script, FETCH_JS, f"{served.url}{expired}")
                assert answer[0] == 404

                # A search's results exported from the search page: the records the search showed, as archived.
                records = await asyncio.to_thread(export_search_results, driver, served.url, person)
                with zipfile.ZipFile(io.BytesIO(records)) as bundle:
                    (events,) = [name for name in bundle.namelist() if name.endswith("events.jsonl")]
                    assert b"the refund is approved" in bundle.read(events)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
