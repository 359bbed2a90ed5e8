"""Closed-loop load for fault tests: a fixed number of workers send signed requests and record every outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from fedai.protocol.errors import ErrorCode


@dataclass(frozen=True)
class Outcome:
    """One request's fate: its event id, when it was sent, the HTTP status (0: no answer), error code and
    Retry-After header."""

    event_id: str
    body: bytes
    sent_at: float
    status: int
    code: str | None
    elapsed_s: float
    retry_after: str | None = None


@dataclass
class LoadRecord:
    outcomes: list[Outcome] = field(default_factory=list)

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.sent_at < end]


_error_body = msgspec.json.Decoder(dict[str, dict[str, object]]).decode


def error_code(status: int, body: bytes) -> str | None:
    """The machine-readable code of a typed error body; "untyped" if the body is not one; None on 200."""
    if status == 200:
        return None
    try:
        code = _error_body(body).get("error", {}).get("code")
    except msgspec.DecodeError:
        return "untyped"
    return code if isinstance(code, str) and code in ErrorCode._value2member_map_ else "untyped"


async def send(session: aiohttp.ClientSession, url: str, body: bytes, event_id: str, timeout_s: float) -> Outcome:
    """POST one signed body; a request without an answer within `timeout_s` is recorded as status 0 ("hang")."""
    started = time.monotonic()
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            payload = await resp.read()
            status, retry_after = resp.status, resp.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError):
        return Outcome(event_id, body, started, 0, "no_answer", time.monotonic() - started)
    elapsed = time.monotonic() - started
    return Outcome(event_id, body, started, status, error_code(status, payload), elapsed, retry_after)


async def closed_loop(
    url: str, make: Callable[[], tuple[str, bytes]], *, concurrency: int, stop: asyncio.Event, timeout_s: float = 15.0
) -> LoadRecord:
    """Run `concurrency` workers, each sending `make()`'s (event id, body) back to back until `stop` is set."""
    record = LoadRecord()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while not stop.is_set():
                event_id, body = make()
                record.outcomes.append(await send(session, url, body, event_id, timeout_s))
                await asyncio.sleep(0.005)  # leave the loop some air: the router shares it

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return record
