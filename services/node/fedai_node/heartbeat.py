"""Heartbeats: the node's signed descriptor, POSTed to each router it is configured for.

A router's pubkey is learned from `GET {endpoint}/health` and must be one of `ROUTER_PUBLIC_KEY`; the
heartbeat is addressed to it (`p`), and the router's ACK must be signed by it and bound (`e`) to the beat.

A router that refuses the node (an error, an untrusted key, an ACK that fails verification) is tried again
after twice the interval, then four times, up to `BACKOFF_MAX_S` (or its Retry-After); each refusal is logged
with the router's message. An unreachable router is tried every interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from enum import StrEnum

import aiohttp
import msgspec

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.errors import FedaiError, KeyFormatError
from fedai.protocol.keys import Keys, npub, parse_pubkey
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, NodeDescriptor
from fedai.service.client import ReplyTooLarge, post_event, read_limited
from fedai.service.tasks import cancel_and_wait

log = logging.getLogger("fedai_node.heartbeat")

MAX_REPLY_BYTES = 64 * 1024
JITTER = 0.1
BACKOFF_MAX_S = 60.0
MAX_LOGGED_MESSAGE = 300  # characters of a router's error message put in the log


class BeatResult(StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"  # connection failed, timed out, or /health unusable
    UNTRUSTED = "untrusted_router"  # /health names a key outside ROUTER_PUBLIC_KEY: nothing was sent
    REJECTED = "rejected"  # the router answered an error, or an ACK whose status is not "ok"
    BAD_ACK = "bad_ack"  # the ACK failed verification (signature, signer, recipient, binding, ...)
    ERROR = "error"  # a bug on our side; logged with its type


class _Health(msgspec.Struct):
    pubkey: str


class RouterReplyError(Exception):
    """A router's reply we can't use (too big, not JSON of the expected shape)."""


def refusal(body: bytes, status: int) -> FedaiError:
    """A router's error body as a typed error (its message, cut to `MAX_LOGGED_MESSAGE`, says why)."""
    err = FedaiError.from_dict(_loads_or_none(body), status)
    return FedaiError(err.code, err.message[:MAX_LOGGED_MESSAGE], retry_after_ms=err.retry_after_ms)


def _npubs(keys: Collection[str]) -> str:
    return ", ".join(sorted(npub(key) for key in keys))


def _loads_or_none(body: bytes) -> object:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


class Heartbeat:
    """Beats at start, then every `interval_ms` (±10% jitter), to every endpoint concurrently."""

    def __init__(
        self,
        *,
        keys: Keys,
        endpoints: Sequence[str],
        trusted: Collection[str],
        interval_ms: int,
        skew_s: int,
        session: aiohttp.ClientSession,
        describe: Callable[[], NodeDescriptor],
        on_result: Callable[[BeatResult], None] = lambda _: None,
        request_timeout_s: float = 5.0,
    ) -> None:
        self._keys = keys
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._trusted = trusted  # live: the admin API may allow or block routers (`TrustedRouters`)
        self._interval_s = interval_ms / 1000
        self._skew_s = skew_s
        self._session = session
        self._describe = describe
        self._on_result = on_result
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._router_keys: dict[str, str] = {}
        self._refusals: dict[str, int] = {}  # endpoint → refusals in a row
        self._not_before: dict[str, float] = {}  # endpoint → monotonic time of its next beat after refusals
        self._retry_after: dict[str, float] = {}  # endpoint → the Retry-After of its last refusal, in seconds
        self._last: dict[str, tuple[BeatResult, float]] = {}  # endpoint → its last result and when (unix s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self._endpoints:
            self._task = asyncio.create_task(self._run(), name="fedai-node-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            due = [e for e in self._endpoints if self._not_before.get(e, 0.0) <= started]
            await asyncio.gather(*(self.beat(e) for e in due))
            delay = self._interval_s * random.uniform(1 - JITTER, 1 + JITTER)
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))

    async def beat_all(self) -> list[BeatResult]:
        """One heartbeat to every router now, backed off or not (the node is leaving: they must hear it)."""
        return await asyncio.gather(*(self.beat(e) for e in self._endpoints))

    async def beat(self, endpoint: str) -> BeatResult:
        """One heartbeat to one router; never raises (except cancellation)."""
        try:
            result = await self._beat(endpoint)
        except (aiohttp.ClientError, TimeoutError, RouterReplyError, ReplyTooLarge) as exc:
            log.warning("heartbeat failed", extra={"router": endpoint, "error_type": type(exc).__name__})
            result = BeatResult.UNREACHABLE
        except Exception:
            log.exception("heartbeat error", extra={"router": endpoint})
            result = BeatResult.ERROR
        if result is not BeatResult.OK:
            self._router_keys.pop(endpoint, None)  # learn the key again next time
        self._back_off(endpoint, result)
        self._last[endpoint] = (result, time.time())
        self._on_result(result)
        return result

    def _back_off(self, endpoint: str, result: BeatResult) -> float:
        """After a refusal, when to try `endpoint` again (twice the wait each time, at most `BACKOFF_MAX_S`)."""
        if result in (BeatResult.OK, BeatResult.UNREACHABLE, BeatResult.ERROR):
            self._refusals.pop(endpoint, None)
            self._not_before.pop(endpoint, None)
            return self._interval_s
        count = self._refusals[endpoint] = self._refusals.get(endpoint, 0) + 1
        wait: float = min(self._interval_s * 2.0**count, max(BACKOFF_MAX_S, self._interval_s))
        wait = max(wait, min(self._retry_after.pop(endpoint, 0.0), 10 * BACKOFF_MAX_S))  # a router's Retry-After
        self._not_before[endpoint] = time.monotonic() + wait
        return wait

    def next_try_s(self, endpoint: str) -> float:
        """Seconds until `endpoint` is beaten again after refusals (0 when it is not backed off)."""
        return max(0.0, self._not_before.get(endpoint.rstrip("/"), 0.0) - time.monotonic())

    def summary(self) -> list[dict[str, object]]:
        """Every router endpoint: its key (as last learned), the last heartbeat's result and time, refusals in a row
        and seconds until the next try (the admin API's status)."""
        out: list[dict[str, object]] = []
        for endpoint in self._endpoints:
            result, at = self._last.get(endpoint, (None, None))
            out.append(
                {
                    "endpoint": endpoint,
                    "pubkey": self._router_keys.get(endpoint),
                    "last_result": None if result is None else result.value,
                    "last_at": at,
                    "refusals": self._refusals.get(endpoint, 0),
                    "next_try_s": round(self.next_try_s(endpoint), 3),
                }
            )
        return out

    async def _router_pubkey(self, endpoint: str) -> str:
        cached = self._router_keys.get(endpoint)
        if cached is not None:
            return cached
        async with self._session.get(f"{endpoint}/health", timeout=self._timeout) as resp:
            body = await read_limited(resp, MAX_REPLY_BYTES)
        try:
            pubkey = parse_pubkey(msgspec.json.decode(body, type=_Health).pubkey)
        except (msgspec.DecodeError, KeyFormatError) as exc:
            raise RouterReplyError(f"/health has no usable pubkey (HTTP {resp.status})") from exc
        return pubkey

    async def _beat(self, endpoint: str) -> BeatResult:
        router = await self._router_pubkey(endpoint)
        if router not in self._trusted:
            log.error(
                f"router at {endpoint} has key {npub(router)}, not the one configured in ROUTER_PUBLIC_KEY "
                f"({_npubs(self._trusted)}); no heartbeat sent",
                extra={"router": endpoint, "router_key": npub(router), "configured": sorted(self._trusted)},
            )
            return BeatResult.UNTRUSTED
        self._router_keys[endpoint] = router
        beat = seal(self._keys, Kind.NODE_HEARTBEAT, self._describe(), to=router, nonce=True)
        reply = await post_event(
            self._session, f"{endpoint}/register-node", beat, client_timeout=self._timeout, limit=MAX_REPLY_BYTES
        )
        body, status = reply.body, reply.status
        if status != 200:
            err = refusal(body, status)
            log.warning(
                f"heartbeat refused by {endpoint}: {err.message}",
                extra={"router": endpoint, "status": status, "code": err.code.value},
            )
            self._retry_after[endpoint] = (err.retry_after_ms or 0) / 1000
            return BeatResult.REJECTED
        try:
            ack = open_envelope(
                body,
                Ack,
                kinds={Kind.ACK},
                recipient=self._keys.pubkey,
                signers={router},
                reply_to=beat.id,
                max_bytes=MAX_REPLY_BYTES,
                skew_s=self._skew_s,
            )
        except FedaiError as err:
            log.error("heartbeat ACK failed verification", extra={"router": endpoint, "code": err.code.value})
            return BeatResult.BAD_ACK
        if ack.payload.status != "ok":
            log.warning("heartbeat not accepted", extra={"router": endpoint, "ack_status": ack.payload.status})
            return BeatResult.REJECTED
        return BeatResult.OK
