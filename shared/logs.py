"""Logging for the API and workers: plain text, or one JSON object per line with
``RESQ_LOG_FORMAT=json``. Lines written while a job is bound (``bind``) carry its
``response_id``, ``tenant`` and ``model`` in both formats' records, so a log search by any
of them finds every line resq wrote about the job."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

JOB_FIELDS = ("response_id", "tenant", "model")
_job: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "resq_job", default=None
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def bind(**fields: str) -> Iterator[None]:
    """Attach a job's fields to every log line written inside the block."""
    token = _job.set({**(_job.get() or {}), **fields})
    try:
        yield
    finally:
        _job.reset(token)


def set_fields(**fields: str) -> None:
    """Attach fields for the rest of the current context (an API request's greenlet)."""
    _job.set({**(_job.get() or {}), **fields})


class _JobFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_job.get() or {}).items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in JOB_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Set up the root logger once per process."""
    handler = logging.StreamHandler()
    handler.addFilter(_JobFields())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
