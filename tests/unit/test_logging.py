"""configure_logging: WA_LOG_FORMAT=json gives one JSON object per line, text stays human, a bad value is refused."""

from __future__ import annotations

import io
import logging
import logging.config
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from devtools.samples import REPO_ROOT
from services.core.logs import configure_logging, log_format_from_env

pytestmark = pytest.mark.unit

ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put every piece of it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hook = sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook
    logging.captureWarnings(False)
    structlog.reset_defaults()


def configured(log_format: str, level: str = "INFO") -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, log_format=log_format, stream=out)
    return out


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    assert lines, "nothing logged"
    return [orjson.loads(line) for line in lines]  # every line is a whole JSON object, or this raises


def test_json_lines_carry_timestamp_level_logger_and_event() -> None:
    out = configured("json")
    logging.getLogger("wa_archive.ingest").warning("kafka unavailable for %d s", 12)
    logging.getLogger("wa_archive.archiver").info("batch written")
    logging.getLogger("wa_archive.archiver").debug("below the level: not written")
    first, second = json_lines(out)
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert first["level"] == "warning"
    assert first["logger"] == "wa_archive.ingest"
    assert first["event"] == "kafka unavailable for 12 s"
    assert (second["level"], second["logger"], second["event"]) == ("info", "wa_archive.archiver", "batch written")
    for line in (first, second):
        assert re.match(ISO_UTC, line["timestamp"]), line["timestamp"]
        assert "exception" not in line


def test_an_exception_is_inside_its_json_line() -> None:
    out = configured("json")
    try:
        raise ValueError("no such bucket")
    except ValueError:
        logging.getLogger("wa_archive.retention").exception("retention run failed")
    [line] = json_lines(out)  # one line: the traceback is not printed below it
    assert line["level"] == "error"
    assert line["event"] == "retention run failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: no such bucket" in line["exception"]


def test_stack_info_is_inside_its_json_line() -> None:
    out = configured("json")
    logging.getLogger("wa_archive.kafka").warning("slow", stack_info=True)
    [line] = json_lines(out)
    assert line["stack"].startswith("Stack (most recent call last):")


def test_library_uvicorn_and_structlog_records_are_json_too() -> None:
    # A uvicorn logging configuration applied before (its default, as a test server of this process may have
    # started with) is replaced; the services then start uvicorn with log_config=None, which sets levels only.
    logging.config.dictConfig(LOGGING_CONFIG)
    out = configured("json")
    logging.getLogger("aiokafka.conn").warning("connection reset")
    uvicorn.Config(app=lambda: None, log_config=None, log_level="info")
    logging.getLogger("uvicorn.error").info("Started server process")
    structlog.get_logger("wa_archive.tools").info("sent", webhooks=3)
    lines = json_lines(out)
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("aiokafka.conn", "connection reset"),
        ("uvicorn.error", "Started server process"),
        ("wa_archive.tools", "sent"),
    ]
    assert lines[2]["webhooks"] == 3


def test_text_stays_human() -> None:
    out = configured("text")
    log = logging.getLogger("wa_archive.ingest")
    log.info("ingest ready on %s", "127.0.0.1:8080")
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        log.exception("produce failed")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" INFO wa_archive.ingest ingest ready on 127.0.0.1:8080")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", lines[0])
    assert lines[1].endswith(" ERROR wa_archive.ingest produce failed")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: broker gone"
    assert not out.getvalue().lstrip().startswith("{")


def test_configuring_again_replaces_the_handler_instead_of_adding_one() -> None:
    configured("text")
    out = configured("json")
    logging.getLogger("wa_archive.ingest").info("once")
    assert len(json_lines(out)) == 1
    assert (
        sum(1 for h in logging.getLogger().handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter))
        == 1
    )


@pytest.mark.parametrize(("value", "expected"), [(None, "text"), ("", "text"), ("text", "text"), ("json", "json")])
def test_the_format_comes_from_wa_log_format(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str) -> None:
    if value is None:
        monkeypatch.delenv("WA_LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("WA_LOG_FORMAT", value)
    assert log_format_from_env() == expected


@pytest.mark.parametrize("value", ["xml", "logfmt", "jsonl", "1"])
def test_an_unknown_format_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("WA_LOG_FORMAT", value)
    with pytest.raises(SystemExit) as stopped:
        configure_logging("INFO")
    assert stopped.value.code == 2
    assert f"WA_LOG_FORMAT={value!r}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", log_format=value)


SCRIPT = textwrap.dedent(
    """
    import logging
    from services.core.logs import configure_logging

    configure_logging("INFO")
    log = logging.getLogger("wa_archive.archiver")
    log.info("archiver ready")
    try:
        {}["missing"]
    except KeyError:
        log.exception("batch failed")
    raise RuntimeError("crashed")
    """
)


def run_script(log_format: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WA_LOG_FORMAT": log_format}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_service_process_writes_only_json_lines_to_stderr() -> None:
    done = run_script("json")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert [(line["level"], line["event"]) for line in lines] == [
        ("info", "archiver ready"),
        ("error", "batch failed"),
        ("critical", "uncaught exception"),  # even the crash is a JSON line
    ]
    assert "KeyError: 'missing'" in lines[1]["exception"]
    assert "RuntimeError: crashed" in lines[2]["exception"]


def test_a_service_process_refuses_an_unknown_format_at_start_up() -> None:
    done = run_script("yaml")
    assert done.returncode == 2
    assert "WA_LOG_FORMAT='yaml'" in done.stderr
    assert "archiver ready" not in done.stderr


def test_http_client_request_logs_are_off() -> None:
    """httpx logs every request at INFO with its URL (a media id, a CDN URL with its hash): warnings only."""
    stream = io.StringIO()
    configure_logging("DEBUG", log_format="text", stream=stream)
    logging.getLogger("httpx").info('HTTP Request: GET https://lookaside.fbsbx.com/?mid=123 "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("httpx").warning("a warning still shows")
    assert stream.getvalue().splitlines()[0].endswith("httpx a warning still shows")
    assert len(stream.getvalue().splitlines()) == 1
