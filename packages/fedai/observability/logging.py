"""JSON-line logs with redaction: prompts, outputs, message bodies and secrets never reach a log line. A line
logged inside a traced span carries its `trace_id` and `span_id` (docs/observability.md#logs-and-traces)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fedai.observability.tracing import current_ids

# Fields that may carry user content or secrets. Anything passed under these names via `extra=` is masked.
SENSITIVE_FIELDS = frozenset(
    {"prompt", "messages", "output", "content", "text", "secret", "nsec", "private_key", "api_key", "authorization"}
)
REDACTED = "[redacted]"

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact_url(url: str) -> str:
    """A URL safe to log or show: userinfo and query string dropped (relay URLs may carry tokens in either)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "[unparseable URL]"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


class RedactingFilter(logging.Filter):
    """Masks sensitive `extra=` fields on every record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in list(record.__dict__):
            if key in SENSITIVE_FIELDS:
                record.__dict__[key] = REDACTED
        return True


class TraceContextFilter(logging.Filter):
    """Adds the current span's `trace_id` and `span_id` to a record logged inside one (tracing on): the way from a
    log line to its request's trace, and back. Nothing is added when tracing is off."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route all logging to stderr as JSON lines through the redacting filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RedactingFilter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "websockets", "aiohttp.access", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
