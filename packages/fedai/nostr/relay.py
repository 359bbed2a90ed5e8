"""One relay of a pool: a connection that reconnects forever, publishing with OKs, NIP-42 AUTH, reading frames.

The connection task reconnects with capped exponential backoff and full jitter and re-sends the pool's open
subscriptions on every connect. Each frame is size-checked and depth-checked before it is parsed; EVENT and
EOSE go to the pool, OK settles a pending publish or AUTH, CLOSED ends a subscription on this relay (or, when
the relay asks for AUTH first and the pool has keys, re-sends it once authenticated). Logs carry the relay's
URL without userinfo or query (relay URLs may carry tokens) and relay-supplied reasons, truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from fedai.nostr.frames import Frame, Malformed, decode_frame, element, encode, is_auth_required, short
from fedai.nostr.subscription import Subscription
from fedai.observability.logging import redact_url
from fedai.protocol.event import Event, sign_event
from fedai.protocol.jsonguard import too_deep
from fedai.protocol.keys import Keys

log = logging.getLogger("fedai.nostr")

AUTH_KIND = 22242  # NIP-42 client authentication
LIBRARY_MARGIN = 64 * 1024  # the websockets frame limit sits this far above our own check

OkFuture = asyncio.Future[tuple[bool, str]]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """One relay's answer to a publish: `ok` and the relay's reason (or ours, when it never answered)."""

    url: str
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How every connection of a pool behaves (see `RelayPool`)."""

    auth_keys: Keys | None
    max_message_bytes: int
    connect_timeout: float
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True, slots=True)
class RelayHooks:
    """What a connection tells its pool, and asks of it."""

    count: Callable[[str], None]  # bump one of the pool's stats
    up: Callable[[], None]  # this relay connected
    down: Callable[[str], None]  # this relay (URL) lost its connection
    open_subscriptions: Callable[[], list[Subscription]]
    subscription: Callable[[str], Subscription | None]  # an open subscription by id
    on_event: Callable[[str, str, Frame], None]  # (relay URL, subscription id, frame); may raise `Malformed`
    on_eose: Callable[[str, str], None]  # (relay URL, subscription id)
    spawn: Callable[[Coroutine[Any, Any, None]], None]  # run in the background until the pool closes


class RelayConnection:
    """One relay: a connection task that reconnects forever, pending OKs, and NIP-42 state."""

    def __init__(self, url: str, settings: RelaySettings, hooks: RelayHooks) -> None:
        self.url = url
        self.label = redact_url(url)  # what logs show: no userinfo, no query (relay URLs may carry tokens)
        self._settings = settings
        self._hooks = hooks
        self._ws: ClientConnection | None = None
        self._sock: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pending_ok: dict[str, list[OkFuture]] = {}
        self._auth_sent = asyncio.Event()  # set once this connection answered a challenge
        self._auth_result: OkFuture | None = None
        self._auth_retried: set[str] = set()  # subscriptions re-sent after CLOSED auth-required
        self._connections = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"fedai.nostr.relay.{self.label}")
        return self._task

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    # -- connection lifecycle -----------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self._settings
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url,
                    open_timeout=settings.connect_timeout,
                    close_timeout=2.0,
                    max_size=settings.max_message_bytes + LIBRARY_MARGIN,
                ) as ws:
                    attempt = 0
                    await self._on_open(ws)
                    await self._read(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                what = "disconnected" if self.connected else "connection failed"
                log.info("relay %s: %s: %s: %s", self.label, what, type(exc).__name__, short(str(exc)))
            except Exception:
                log.exception("relay %s: unexpected error; reconnecting", self.label)
            finally:
                self._on_lost()
            delay = self._backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a uniform delay up to the capped exponential step for this attempt."""
        settings = self._settings
        return random.uniform(0, min(settings.backoff_max, settings.backoff_initial * 2 ** min(attempt, 32)))

    async def _on_open(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._sock = _tcp_socket(ws)
        self._connections += 1
        self._auth_sent.clear()
        self._auth_result = None
        self._auth_retried.clear()
        if self._connections > 1:
            self._hooks.count("reconnects")
        log.info("relay %s: connected", self.label)
        self._hooks.up()
        for sub in self._hooks.open_subscriptions():
            await self._send_req(ws, sub)

    def _on_lost(self) -> None:
        was_connected = self._ws is not None
        self._ws = None
        pending, self._pending_ok = self._pending_ok, {}
        for futures in pending.values():
            for fut in futures:
                if not fut.done():
                    fut.set_result((False, "connection lost"))
        if was_connected:
            self._hooks.down(self.url)

    # -- sending ------------------------------------------------------------------------------------

    async def send(self, message: Sequence[Any]) -> bool:
        """Send one message if connected; False when there is no open connection."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(encode(message), text=True)
        except ConnectionClosed:
            return False
        return True

    async def _send_req(self, ws: ClientConnection, sub: Subscription) -> None:
        await ws.send(encode(["REQ", sub.id, *sub.req_filters(self.url)]), text=True)

    async def publish(self, event: Event, deadline: float) -> PublishResult:
        """Send the event and wait for OK; on auth-required, authenticate and retry once."""
        result = await self._send_event(event, deadline)
        if not result.ok and is_auth_required(result.message) and self._settings.auth_keys is not None:
            log.info("relay %s: publish needs AUTH; authenticating and retrying", self.label)
            if await self.wait_authenticated(deadline):
                result = await self._send_event(event, deadline)
        return result

    async def _send_event(self, event: Event, deadline: float) -> PublishResult:
        ws = self._ws
        if ws is None:
            return PublishResult(self.url, False, "not connected")
        fut = self._expect_ok(event.id)
        try:
            await ws.send(encode(["EVENT", event]), text=True)
            ok, message = await asyncio.wait_for(fut, max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            return PublishResult(self.url, False, "timed out waiting for OK")
        except ConnectionClosed:
            return PublishResult(self.url, False, "connection lost")
        finally:
            self._forget_ok(event.id, fut)
        return PublishResult(self.url, ok, message)

    def _expect_ok(self, event_id: str) -> OkFuture:
        fut: OkFuture = asyncio.get_running_loop().create_future()
        self._pending_ok.setdefault(event_id, []).append(fut)
        return fut

    def _forget_ok(self, event_id: str, fut: OkFuture) -> None:
        futures = self._pending_ok.get(event_id)
        if futures and fut in futures:
            futures.remove(fut)
            if not futures:
                del self._pending_ok[event_id]

    # -- NIP-42 -------------------------------------------------------------------------------------

    async def wait_authenticated(self, deadline: float) -> bool:
        """Wait for this connection's challenge to be answered and accepted (False on refusal or timeout)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.wait_for(self._auth_sent.wait(), max(0.0, deadline - loop.time()))
                fut = self._auth_result
                if fut is None:
                    return False
                ok, _ = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
                if ok or self._auth_result is fut:
                    return ok
                # a newer challenge replaced this answer: wait for the newer one
        except TimeoutError:
            return False

    async def _answer_challenge(self, ws: ClientConnection, challenge: str) -> None:
        keys = self._settings.auth_keys
        if keys is None:
            log.info("relay %s: AUTH challenge received but the pool has no auth keys", self.label)
            return
        self._supersede_auth()
        auth = sign_event(keys, AUTH_KIND, "", [["relay", self.url], ["challenge", challenge]])
        fut = self._expect_ok(auth.id)
        fut.add_done_callback(self._log_auth_result)
        self._auth_result = fut
        self._auth_sent.set()
        await ws.send(encode(["AUTH", auth]), text=True)

    def _supersede_auth(self) -> None:
        """A new challenge replaces an unanswered AUTH, so a relay cannot make pending answers pile up."""
        previous = self._auth_result
        if previous is None or previous.done():
            return
        for event_id, futures in list(self._pending_ok.items()):
            if previous in futures:
                self._forget_ok(event_id, previous)
        previous.set_result((False, "superseded by a new AUTH challenge"))

    def _log_auth_result(self, fut: OkFuture) -> None:
        if fut.cancelled():
            return
        ok, message = fut.result()
        if ok:
            log.info("relay %s: authenticated", self.label)
        else:
            log.warning("relay %s: AUTH refused: %r", self.label, short(message))

    async def _resubscribe_after_auth(self, ws: ClientConnection, sub: Subscription) -> None:
        deadline = asyncio.get_running_loop().time() + self._settings.connect_timeout
        if await self.wait_authenticated(deadline) and self._ws is ws and not sub.closed:
            try:
                await self._send_req(ws, sub)
            except ConnectionClosed:
                log.info("relay %s: connection lost before re-sending %s", self.label, sub.id)
            return
        sub._relay_gone(self.url)

    # -- receiving ----------------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        limit = self._settings.max_message_bytes
        while True:
            raw = await ws.recv(decode=False)
            data = raw.encode() if isinstance(raw, str) else raw
            if len(data) > limit:
                self._hooks.count("oversized")
                log.info("relay %s: dropped a %d-byte message", self.label, len(data))
                continue
            try:
                if too_deep(data):  # msgspec recurses per level, even into a Raw: refuse before parsing
                    raise Malformed("nested too deep")
                await self._handle(ws, decode_frame(data))
            except (Malformed, msgspec.DecodeError):
                self._hooks.count("malformed")
                log.debug("relay %s: malformed message", self.label)

    async def _handle(self, ws: ClientConnection, frame: Frame) -> None:
        _quick_ack(self._sock)
        kind = element(frame, 0, str)
        if kind == "EVENT":
            self._hooks.on_event(self.url, element(frame, 1, str), frame)
        elif kind == "EOSE":
            self._hooks.on_eose(self.url, element(frame, 1, str))
        elif kind == "OK":
            self._on_ok(
                element(frame, 1, str), element(frame, 2, bool), element(frame, 3, str) if len(frame) > 3 else ""
            )
        elif kind == "NOTICE":
            self._hooks.count("notices")
            log.info("relay %s: NOTICE %r", self.label, short(element(frame, 1, str)))
        elif kind == "CLOSED":
            self._on_closed(ws, element(frame, 1, str), element(frame, 2, str) if len(frame) > 2 else "")
        elif kind == "AUTH":
            await self._answer_challenge(ws, element(frame, 1, str))
        else:
            self._hooks.count("unknown")
            log.debug("relay %s: unknown message type %r", self.label, short(kind))

    def _on_ok(self, event_id: str, ok: bool, message: str) -> None:
        futures = self._pending_ok.pop(event_id, [])
        for fut in futures:
            if not fut.done():
                fut.set_result((ok, message))
        if not futures:
            log.debug("relay %s: OK for an event we are not waiting on: %s", self.label, short(event_id))

    def _on_closed(self, ws: ClientConnection, sub_id: str, reason: str) -> None:
        log.info("relay %s: closed subscription %r: %r", self.label, short(sub_id), short(reason))
        sub = self._hooks.subscription(sub_id)
        if sub is None:
            return
        if is_auth_required(reason) and self._settings.auth_keys is not None and sub_id not in self._auth_retried:
            self._auth_retried.add(sub_id)
            self._hooks.spawn(self._resubscribe_after_auth(ws, sub))
        else:
            sub._relay_gone(self.url)


def _tcp_socket(ws: ClientConnection) -> Any:
    """The connection's socket (asyncio hands out a `TransportSocket` wrapper that supports setsockopt)."""
    return ws.transport.get_extra_info("socket") if ws.transport is not None else None


def _quick_ack(sock: Any) -> None:
    """Acknowledge what we just read at once (Linux TCP_QUICKACK, which the kernel clears again by itself).

    Some relays (the embedded nostr-sdk one among them) do not disable Nagle: their next frame on a connection
    waits for our ACK of the previous one, which Linux delays by up to 40 ms. Measured on the auction round
    trip (bench/auction.py): p50 45.8 ms without, 2.4 ms with.
    """
    if sock is not None and _TCP_QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
