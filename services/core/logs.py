"""Logging of every service: one record per line on stderr, as text for people or JSON lines for a log pipeline.

``WA_LOG_FORMAT`` chooses (``text``, the default, or ``json``). Every ``logging.getLogger(...)`` record — the
services' ``wa_archive.*`` tree, uvicorn's (started with ``log_config=None``, so its records reach the root
handler) and the libraries' — goes through structlog's ProcessorFormatter on the root logger. No personal data:
the services log pseudonyms, counts and outcomes only.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict

from services.core.vocabulary import rfc3339_millis

LOG_FORMATS = ("text", "json")
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_format_from_env() -> str:
    """``WA_LOG_FORMAT``: ``text`` (the default) or ``json``; anything else stops the service with a message."""
    value = os.environ.get("WA_LOG_FORMAT", "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        print(
            f"invalid configuration: WA_LOG_FORMAT={os.environ['WA_LOG_FORMAT']!r}: "
            f"expected one of {', '.join(LOG_FORMATS)} (json for a log pipeline, text for people)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return value


def configure_logging(level: str, *, log_format: str | None = None, stream: TextIO | None = None) -> None:
    """One record per line on stderr, no personal data: the services log pseudonyms, counts and outcomes only.

    The format is ``WA_LOG_FORMAT`` unless ``log_format`` is given: ``text`` is ``time LEVEL logger message`` with
    a traceback below the line, for people; ``json`` is one JSON object per line (``timestamp`` in ISO 8601 UTC,
    ``level``, ``logger``, ``event`` = the message, ``exception`` / ``stack`` as text inside the object), for a
    Kubernetes log pipeline. Every ``logging.getLogger(...)`` record goes through structlog's ProcessorFormatter on
    the root logger, and so do uvicorn's and the libraries' records and ``structlog.get_logger()`` loggers.
    """
    chosen = log_format_from_env() if log_format is None else log_format
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format {chosen!r}: expected one of {', '.join(LOG_FORMATS)}")
    if chosen == "json":
        formatter: logging.Formatter = structlog.stdlib.ProcessorFormatter(
            processors=[
                _add_timestamp,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _record_stack,
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                _common_keys_first,
                structlog.processors.JSONRenderer(),
            ]
        )
    else:
        formatter = structlog.stdlib.ProcessorFormatter(
            processors=[_text_message], fmt=TEXT_LOG_FORMAT, keep_exc_info=True, keep_stack_info=True
        )
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One handler for the process: a uvicorn logging configuration applied before (uvicorn's default gives its
    # loggers handlers of their own and stops propagation) would bypass it. The services then start uvicorn with
    # log_config=None, which leaves this as it is.
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # httpx logs every request at INFO with its URL: a media id, a CDN URL with its hash. Warnings only.
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    # JSON: Python warnings, uvicorn's records and an uncaught exception become JSON lines too, not raw text.
    logging.captureWarnings(chosen == "json")
    if chosen == "json":
        sys.excepthook = _log_uncaught
    elif sys.excepthook is _log_uncaught:
        sys.excepthook = sys.__excepthook__


_OURS = "_wa_archive_handler"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
QUIET_LIBRARY_LOGGERS = ("httpx", "httpcore")


def _add_timestamp(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """When the record was made (not when it was formatted), ISO 8601 in UTC with milliseconds."""
    record: logging.LogRecord = event_dict["_record"]
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    event_dict["timestamp"] = rfc3339_millis(moment)
    return event_dict


def _record_stack(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """A standard record's ``stack_info=True`` arrives as the stack's text: keep it (as ``stack``)."""
    if isinstance(event_dict.get("stack_info"), str):
        event_dict["stack"] = event_dict.pop("stack_info")
    return event_dict


def _common_keys_first(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger, event, then the rest: the order a person reading ``kubectl logs`` expects."""
    first = {key: event_dict.pop(key) for key in ("timestamp", "level", "logger", "event") if key in event_dict}
    return {**first, **event_dict}


def _text_message(_logger: Any, _method: str, event_dict: EventDict) -> str:
    """The message of a text line: the event, then a structlog call's other keys as ``key=value``; the standard
    formatter around it adds time, level, logger and the traceback below."""
    record: logging.LogRecord = event_dict.pop("_record")
    event_dict.pop("_from_structlog", None)
    event_dict.pop("stack_info", None)
    exc_info = event_dict.pop("exc_info", None)
    if exc_info and not record.exc_info:  # a structlog call's exc_info: let the standard formatter render it
        if isinstance(exc_info, BaseException):
            record.exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif isinstance(exc_info, tuple):
            record.exc_info = exc_info
        else:
            record.exc_info = sys.exc_info()
    message = str(event_dict.pop("event", ""))
    extra = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    return f"{message} {extra}" if extra else message


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("wa_archive").critical("uncaught exception", exc_info=(kind, error, traceback))
