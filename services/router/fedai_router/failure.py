"""What a client gets when a handler fails with something other than a `FedaiError`: one place, every route.

A database that is down or restarting is the client's `unavailable` (503, Retry-After): nothing was answered
and the request may be sent again as a new event (the same event is a replay once its id was claimed). Any
other exception is a bug: `internal` (500), with only its type logged (messages may carry data)."""

from __future__ import annotations

import logging

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.store.db import is_unavailable

log = logging.getLogger("fedai.router")

RETRY_AFTER_MS = 2_000


def typed_failure(exc: BaseException, route: str) -> FedaiError:
    """The typed error for an exception a handler let escape (a `FedaiError` is returned as it is)."""
    if isinstance(exc, FedaiError):
        return exc
    if is_unavailable(exc):
        log.warning("database unavailable", extra={"route": route, "error": type(exc).__name__})
        return FedaiError(ErrorCode.UNAVAILABLE, "the router's database is unavailable; retry shortly",
                          retry_after_ms=RETRY_AFTER_MS)  # fmt: skip
    log.error("unhandled error", extra={"route": route, "error": type(exc).__name__})
    return FedaiError(ErrorCode.INTERNAL, "internal error")
