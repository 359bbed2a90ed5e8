"""Graceful drain (runbooks/router-ops.md#drain): on SIGTERM a service stops taking requests and finishes the
ones in flight, for at most its drain timeout, before it stops.

`Drain` counts the requests in flight; `DrainGate` (pure ASGI, so a stream counts until its last byte) refuses
new ones once draining with `unavailable` (503, Retry-After), except the paths that report on the service
(`/health`, `/ready`, `/metrics`, ...), which keep answering. `run_service` starts the drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.service.http import error_response

log = logging.getLogger("fedai.drain")

DEFAULT_TIMEOUT_S = 30.0
RETRY_AFTER_MS = 5_000  # what a refused caller is told: another replica or node is there, or this one is back
DRAINING_MESSAGE = "draining: this service is shutting down and takes no new requests; retry after Retry-After"
CUT_OFF_MESSAGE = "draining: the drain timeout passed before this request finished; nothing was answered, send it again"
OPS_PATHS = frozenset({"/health", "/ready", "/metrics", "/status", "/descriptor"})

Hook = Callable[[], Awaitable[None]]


class Drain:
    """Whether the service is draining, and how many requests it has in flight."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.stopping = False  # SIGTERM's drain: the service stops once it ends, and is never resumed
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._hooks: list[Hook] = []
        self._resume_hooks: list[Hook] = []

    def on_drain(self, hook: Hook) -> None:
        """`hook` runs when the drain begins (the node tells its routers it is leaving), within the timeout."""
        self._hooks.append(hook)

    def on_resume(self, hook: Hook) -> None:
        """`hook` runs when an operator's drain is lifted (`resume`): the node tells its routers it is back."""
        self._resume_hooks.append(hook)

    async def begin(self) -> None:
        """An operator's drain (the node's admin API): refuse new requests from now and run the hooks, within the
        timeout; the process keeps running, and the requests in flight finish, until `resume` or SIGTERM."""
        self.draining = True
        log.info(f"draining on an operator's request: {self.in_flight} requests in flight")
        await self._run_hooks(self._hooks)

    async def resume(self) -> bool:
        """Take new requests again after `begin`, and run the resume hooks; False (nothing changed) once the
        service is stopping."""
        if self.stopping:
            return False
        self.draining = False
        log.info("drain lifted: taking new requests")
        await self._run_hooks(self._resume_hooks)
        return True

    async def _run_hooks(self, hooks: list[Hook]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                for hook in hooks:
                    await _run_hook(hook)
        except TimeoutError:
            log.warning("drain hooks timed out")

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def run(self) -> bool:
        """Refuse new requests from now, run the hooks, wait for the requests in flight; True if they all
        finished within the timeout."""
        self.draining = True
        self.stopping = True
        log.info(f"draining: {self.in_flight} requests in flight, at most {self.timeout_s:g} s")
        try:
            async with asyncio.timeout(self.timeout_s):
                for hook in self._hooks:
                    await _run_hook(hook)
                await self._idle.wait()
        except TimeoutError:
            log.warning(f"drain timed out with {self.in_flight} requests in flight")
            return False
        log.info("drained: no request in flight")
        return True


async def _run_hook(hook: Hook) -> None:
    try:
        await hook()
    except Exception as exc:  # noqa: BLE001 - a hook that fails must not stop the drain; logged with its type
        log.warning("drain hook failed", extra={"error_type": type(exc).__name__})


def draining_error(message: str = DRAINING_MESSAGE) -> FedaiError:
    return FedaiError(ErrorCode.UNAVAILABLE, message, retry_after_ms=RETRY_AFTER_MS)


class DrainGate:
    """Counts each HTTP request while it runs (a streamed answer until its end); once draining, refuses new
    ones outside `exempt` with `unavailable` and Retry-After. A request the server cancels after the drain
    timeout gets `unavailable` too if it had no answer yet (else its stream is cut), not a 500 and a traceback."""

    def __init__(
        self, app: ASGIApp, drain: Drain, exempt: Collection[str] = OPS_PATHS, exempt_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.drain = drain
        self.exempt = frozenset(exempt)
        self.exempt_prefixes = exempt_prefixes  # e.g. the node's /admin/api/: a drained node can still be resumed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.exempt or path.startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.draining:
            await error_response(draining_error())(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        drain.enter()
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not drain.draining:
                raise
            # cancelled by the server once the drain timed out (server.CANCEL_AFTER_DRAIN_S): the end of this
            # request, answered here; the cancellation is not passed on, the server is stopping this task
            log.warning("request cut off by the drain timeout", extra={"answered": started})
            if not started:
                await error_response(draining_error(CUT_OFF_MESSAGE))(scope, receive, send)
        finally:
            drain.leave()
