"""What a client gets when a request fails, in one place for every route: the typed error, counted.

A `FedaiError` stands as it is. A database that is down or restarting is the client's `unavailable` (503,
Retry-After): nothing was answered and the request may be sent again as a new event (the same event is a replay
once its id was claimed). Any other exception is a bug: `internal` (500), with only its type logged (messages
may carry data). `Failures` counts each error the client hears: per route and code (`fedai_router_requests`)
when the request fails, and per code (`fedai_router_errors`) always, also for an error inside a stream. A request
the nodes failed (`upstream_error`, `upstream_timeout`) is logged once, `request failed`, with its route and code:
with tracing on the line carries the request's `trace_id`, as do its `node attempt failed` lines
(runbooks/triage.md)."""

from __future__ import annotations

import logging

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.store.db import is_unavailable
from fedai_router.metrics import RouterMetrics

log = logging.getLogger("fedai.router")

RETRY_AFTER_MS = 2_000
NODES_FAILED = frozenset({ErrorCode.UPSTREAM_ERROR, ErrorCode.UPSTREAM_TIMEOUT})


def typed_failure(exc: BaseException, route: str) -> FedaiError:
    """The typed error for an exception a handler let escape (a `FedaiError` is returned as it is)."""
    if isinstance(exc, FedaiError):
        return exc
    if is_unavailable(exc):
        log.warning("database unavailable", extra={"route": route, "error": type(exc).__name__})
        return FedaiError(
            ErrorCode.UNAVAILABLE, "the router's database is unavailable; retry shortly", retry_after_ms=RETRY_AFTER_MS
        )
    log.error("unhandled error", extra={"route": route, "error": type(exc).__name__})
    return FedaiError(ErrorCode.INTERNAL, "internal error")


class Failures:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def refused(self, route: str, exc: BaseException) -> FedaiError:
        """A request to `route` failed with `exc`: its typed error, counted for the route and the code."""
        err = typed_failure(exc, route)
        if err.code in NODES_FAILED:
            log.info("request failed", extra={"route": route, "code": err.code.value})
        self.metrics.requests.labels(route, err.code.value).inc()
        self.metrics.errors.labels(err.code.value).inc()
        return err

    def in_stream(self, exc: BaseException, route: str) -> FedaiError:
        """A stream whose headers were sent (and counted `ok`) failed with `exc`: its typed error event, counted."""
        err = typed_failure(exc, route)
        if err.code in NODES_FAILED:
            log.info("request failed", extra={"route": route, "code": err.code.value, "stream": True})
        self.metrics.errors.labels(err.code.value).inc()
        return err
