"""Structured logging: one line per event, to stderr, as text or JSON.

Events keep the seed's names (``enrichment_job_started``, ``enrichment_completed``,
``enrichment_failed``, ``enrichment_retry``, ...). Fields go in ``extra={"fields": {...}}``; use
``log_event`` rather than formatting them into the message. Under systemd (``JOURNAL_STREAM`` set)
text lines carry ``<N>`` syslog priority prefixes so journald keeps the levels.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LOGGER = "enrichctl"
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    logger.log(level, event, extra={"fields": fields})


def _stamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join([record.levelname.lower(), record.getMessage(), *parts])
        if record.exc_info and record.levelno >= logging.ERROR and os.environ.get("ENRICHCTL_DEBUG"):
            line += "\n" + self.formatException(record.exc_info)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return f"{_stamp(record.created)} {line}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _stamp(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(doc, default=str, separators=(",", ":"))


def _text_value(value: Any) -> str:
    """A field's value, quoted (JSON-escaped) when it has a blank or a control character: an
    escape sequence in a pause reason must not reach a terminal or journal raw."""
    text = str(value)
    if " " in text or not text or not text.isprintable():
        return json.dumps(text)
    return text


def logging_setup(fmt: str = "text", level: str | None = None) -> None:
    """Configure the ``enrichctl`` logger once per process (idempotent)."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(journald))
    logger.addHandler(handler)
    logger.propagate = False
    if level is None:
        # On a terminal the progress display tells the story; logs stay for warnings.
        level = "WARNING" if sys.stderr.isatty() else "INFO"
    logger.setLevel(level.upper())


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}")
