"""A pool of Nostr relay connections (DESIGN.md section 6).

Relays are not trusted: every event a relay sends is size-checked before parsing, schema-checked, matched against
the subscription's filters, verified (id recomputed, BIP-340 signature), charged to a per-author budget and
de-duplicated before a handler sees it. Connections reconnect on their own with capped exponential backoff and
full jitter, and open subscriptions are re-sent after every reconnect. NIP-42 AUTH challenges are answered when
the pool has keys. Logs carry relay URLs (without userinfo or query, which may hold tokens), subscription ids,
event ids and relay-supplied reasons, never event content or keys. Frames nested deeper than the JSON depth bound
are dropped before parsing (the connection stays up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from fedai.nostr.filters import matches_any
from fedai.observability.logging import redact_url
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import DEFAULT_MAX_EVENT_BYTES, Event, decode_event, sign_event, verify_event
from fedai.protocol.jsonguard import too_deep
from fedai.protocol.keys import Keys

log = logging.getLogger("fedai.nostr")

EventHandler = Callable[[Event, str], Awaitable[None]]

AUTH_KIND = 22242  # NIP-42 client authentication
MESSAGE_OVERHEAD = 1024  # bytes allowed around an event in ["EVENT", <subscription id>, <event>]
LIBRARY_MARGIN = 64 * 1024  # the websockets frame limit sits this far above our own check
RESUBSCRIBE_MARGIN_S = 60  # a re-sent REQ asks again from (newest event seen from that relay) minus this
DEFAULT_DEDUP_SIZE = 65_536
DEFAULT_QUEUE_SIZE = 10_000
MAX_TRACKED_AUTHORS = 100_000
MAX_SUB_ID_LEN = 64  # NIP-01
_REASON_LOG_LEN = 200

STAT_NAMES = (
    "received",  # EVENT messages received
    "invalid",  # bad schema, id or signature
    "oversized",  # message or event over the size bound
    "over_budget",  # author exceeded its budget
    "duplicates",  # already delivered to that subscription
    "unmatched",  # event does not match the subscription's filters
    "dropped",  # subscription queue full
    "handler_errors",
    "reconnects",
    "notices",
    "malformed",  # not a JSON array of the expected shape
    "unknown",  # unknown message type
)

_encode = msgspec.json.Encoder().encode
_decode_frame = msgspec.json.Decoder(list[msgspec.Raw]).decode
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """One relay's answer to a publish: `ok` and the relay's reason (or ours, when it never answered)."""

    url: str
    ok: bool
    message: str


class _Malformed(Exception):
    """A relay message that is not a JSON array of the expected shape."""


def _field(frame: list[msgspec.Raw], index: int, typ: type[_T]) -> _T:
    """Decode element `index` of a relay message as `typ`, or raise `_Malformed`."""
    if index >= len(frame):
        raise _Malformed(f"missing element {index}")
    try:
        return msgspec.json.decode(frame[index], type=typ)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise _Malformed(str(exc)) from None


def _short(reason: str) -> str:
    """A relay-supplied reason, truncated for a log line."""
    return reason if len(reason) <= _REASON_LOG_LEN else reason[:_REASON_LOG_LEN] + "…"


def _is_auth_required(reason: str) -> bool:
    return reason.startswith("auth-required:")


class _Lru:
    """A bounded map from event id to its created_at, forgetting the least recently used."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> int | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def add(self, key: str, value: int = 0) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


class _AuthorBudget:
    """At most `limit` accepted events per author in any sliding window of `window` seconds."""

    def __init__(self, limit: int, window: float, max_authors: int = MAX_TRACKED_AUTHORS) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("author_budget needs a positive count and window")
        self._limit = limit
        self._window = window
        self._max_authors = max_authors
        self._log: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, author: str, now: float) -> bool:
        """Charge one event to `author` if the budget allows it."""
        times = self._log.get(author)
        if times is None:
            times = self._log[author] = deque()
            while len(self._log) > self._max_authors:
                self._log.popitem(last=False)
        else:
            self._log.move_to_end(author)
        cutoff = now - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) >= self._limit:
            return False
        times.append(now)
        return True


class Subscription:
    """An open REQ on every relay of a pool. Events reach the handler in order, one at a time, from its own task,
    so a handler may publish or close the subscription without stalling the relay connections."""

    def __init__(
        self,
        pool: RelayPool,
        sub_id: str,
        filters: list[dict[str, Any]],
        handler: EventHandler,
        expected_eose: set[str],
        *,
        dedup_size: int,
        queue_size: int,
    ) -> None:
        self.id = sub_id
        self.filters = filters
        self.eose = asyncio.Event()
        self._pool = pool
        self._handler = handler
        self._eose_pending = expected_eose
        self._eose_from: set[str] = set()
        self._eose_queued: set[str] = set()
        self._delivered = _Lru(dedup_size)
        self._last_seen: dict[str, int] = {}
        self._queue: asyncio.Queue[tuple[Event | None, str]] = asyncio.Queue()
        self._queue_size = queue_size
        self._closed = False
        self._worker = asyncio.create_task(self._run(), name=f"fedai.nostr.sub.{sub_id}")

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_eose(self, timeout: float) -> bool:  # noqa: ASYNC109 - part of the public API
        """True once every relay connected at subscribe time has sent EOSE (any one relay if none was)."""
        try:
            await asyncio.wait_for(self.eose.wait(), timeout)
        except TimeoutError:
            return self.eose.is_set()
        return True

    async def close(self) -> None:
        """Send CLOSE to the relays and stop delivery. Safe to call from the handler itself."""
        if self._closed:
            return
        self._closed = True
        await self._pool._unsubscribe(self)
        await self._stop_worker()

    def req_filters(self, url: str) -> list[dict[str, Any]]:
        """The filters for a REQ to `url`: after a reconnect, `since` moves up to what that relay already sent."""
        last = self._last_seen.get(url)
        if last is None:
            return self.filters
        since = max(0, last - RESUBSCRIBE_MARGIN_S)
        return [{**f, "since": max(int(f.get("since", 0)), since)} for f in self.filters]

    # -- called by the pool --------------------------------------------------------------------------

    def _delivered_at(self, event_id: str) -> int | None:
        return self._delivered.get(event_id)

    def _note_seen(self, url: str, created_at: int) -> None:
        if created_at > self._last_seen.get(url, -1):
            self._last_seen[url] = created_at

    def _offer(self, event: Event, url: str) -> bool:
        """Queue an event for the handler; False (and not marked delivered) when the queue is full."""
        if self._queue.qsize() >= self._queue_size:
            return False
        self._delivered.add(event.id, event.created_at)
        self._queue.put_nowait((event, url))
        return True

    def _offer_eose(self, url: str) -> None:
        """EOSE goes through the queue so `eose` is set only after the stored events before it were handled.
        Only the first EOSE from each relay matters, so repeats are not queued."""
        if url not in self._eose_queued:
            self._eose_queued.add(url)
            self._queue.put_nowait((None, url))

    def _relay_gone(self, url: str) -> None:
        """A relay dropped or closed this subscription: stop waiting for its EOSE."""
        self._eose_pending.discard(url)
        self._check_eose()

    async def _stop_worker(self) -> None:
        self._closed = True
        if self._worker is not asyncio.current_task() and not self._worker.done():
            self._worker.cancel()
            await asyncio.wait([self._worker])

    # -- delivery -----------------------------------------------------------------------------------

    def _check_eose(self) -> None:
        if self._eose_from and self._eose_pending <= self._eose_from:
            self.eose.set()

    async def _run(self) -> None:
        while not self._closed:
            event, url = await self._queue.get()
            if self._closed:
                return
            if event is None:
                self._eose_from.add(url)
                self._check_eose()
            else:
                await self._deliver(event, url)

    async def _deliver(self, event: Event, url: str) -> None:
        try:
            await self._handler(event, url)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not stop delivery; logged without content
            self._pool._count("handler_errors")
            log.warning(
                "subscription %s: handler raised %s on event %s from %s",
                self.id,
                type(exc).__name__,
                event.id,
                redact_url(url),
            )


class _Relay:
    """One relay: a connection task that reconnects forever, pending OKs, and NIP-42 state."""

    def __init__(self, pool: RelayPool, url: str) -> None:
        self.url = url
        self.label = redact_url(url)  # what logs show: no userinfo, no query (relay URLs may carry tokens)
        self._pool = pool
        self._ws: ClientConnection | None = None
        self._sock: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pending_ok: dict[str, list[asyncio.Future[tuple[bool, str]]]] = {}
        self._auth_sent = asyncio.Event()  # set once this connection answered a challenge
        self._auth_result: asyncio.Future[tuple[bool, str]] | None = None
        self._auth_retried: set[str] = set()  # subscriptions re-sent after CLOSED auth-required
        self._connections = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"fedai.nostr.relay.{self.label}")
        return self._task

    # -- connection lifecycle -----------------------------------------------------------------------

    async def _run(self) -> None:
        pool = self._pool
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url,
                    open_timeout=pool.connect_timeout,
                    close_timeout=2.0,
                    max_size=pool.max_message_bytes + LIBRARY_MARGIN,
                ) as ws:
                    attempt = 0
                    await self._on_open(ws)
                    await self._read(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                what = "disconnected" if self.connected else "connection failed"
                log.info("relay %s: %s: %s: %s", self.label, what, type(exc).__name__, _short(str(exc)))
            except Exception:
                log.exception("relay %s: unexpected error; reconnecting", self.label)
            finally:
                self._on_lost()
            delay = random.uniform(0, min(pool.backoff_max, pool.backoff_initial * 2 ** min(attempt, 32)))
            attempt += 1
            await asyncio.sleep(delay)

    async def _on_open(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._sock = _tcp_socket(ws)
        self._connections += 1
        self._auth_sent.clear()
        self._auth_result = None
        self._auth_retried.clear()
        if self._connections > 1:
            self._pool._count("reconnects")
        log.info("relay %s: connected", self.label)
        self._pool._relay_up()
        for sub in self._pool._open_subscriptions():
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
            self._pool._relay_down(self.url)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    # -- sending ------------------------------------------------------------------------------------

    async def send(self, message: Sequence[Any]) -> bool:
        """Send one message if connected; False when there is no open connection."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(_encode(message), text=True)
        except ConnectionClosed:
            return False
        return True

    async def _send_req(self, ws: ClientConnection, sub: Subscription) -> None:
        await ws.send(_encode(["REQ", sub.id, *sub.req_filters(self.url)]), text=True)

    async def publish(self, event: Event, deadline: float) -> PublishResult:
        """Send the event and wait for OK; on auth-required, authenticate and retry once."""
        result = await self._send_event(event, deadline)
        if not result.ok and _is_auth_required(result.message) and self._pool.auth_keys is not None:
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
            await ws.send(_encode(["EVENT", event]), text=True)
            ok, message = await asyncio.wait_for(fut, max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            return PublishResult(self.url, False, "timed out waiting for OK")
        except ConnectionClosed:
            return PublishResult(self.url, False, "connection lost")
        finally:
            self._forget_ok(event.id, fut)
        return PublishResult(self.url, ok, message)

    def _expect_ok(self, event_id: str) -> asyncio.Future[tuple[bool, str]]:
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._pending_ok.setdefault(event_id, []).append(fut)
        return fut

    def _forget_ok(self, event_id: str, fut: asyncio.Future[tuple[bool, str]]) -> None:
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
        keys = self._pool.auth_keys
        if keys is None:
            log.info("relay %s: AUTH challenge received but the pool has no auth keys", self.label)
            return
        self._supersede_auth()
        auth = sign_event(keys, AUTH_KIND, "", [["relay", self.url], ["challenge", challenge]])
        fut = self._expect_ok(auth.id)
        fut.add_done_callback(self._log_auth_result)
        self._auth_result = fut
        self._auth_sent.set()
        await ws.send(_encode(["AUTH", auth]), text=True)

    def _supersede_auth(self) -> None:
        """A new challenge replaces an unanswered AUTH, so a relay cannot make pending answers pile up."""
        previous = self._auth_result
        if previous is None or previous.done():
            return
        for event_id, futures in list(self._pending_ok.items()):
            if previous in futures:
                self._forget_ok(event_id, previous)
        previous.set_result((False, "superseded by a new AUTH challenge"))

    def _log_auth_result(self, fut: asyncio.Future[tuple[bool, str]]) -> None:
        if fut.cancelled():
            return
        ok, message = fut.result()
        if ok:
            log.info("relay %s: authenticated", self.label)
        else:
            log.warning("relay %s: AUTH refused: %r", self.label, _short(message))

    async def _resubscribe_after_auth(self, ws: ClientConnection, sub: Subscription) -> None:
        deadline = asyncio.get_running_loop().time() + self._pool.connect_timeout
        if await self.wait_authenticated(deadline) and self._ws is ws and not sub.closed:
            try:
                await self._send_req(ws, sub)
            except ConnectionClosed:
                log.info("relay %s: connection lost before re-sending %s", self.label, sub.id)
            return
        sub._relay_gone(self.url)

    # -- receiving ----------------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            raw = await ws.recv(decode=False)
            data = raw.encode() if isinstance(raw, str) else raw
            if len(data) > self._pool.max_message_bytes:
                self._pool._count("oversized")
                log.info("relay %s: dropped a %d-byte message", self.label, len(data))
                continue
            try:
                if too_deep(data):  # msgspec recurses per level, even into a Raw: refuse before parsing
                    raise _Malformed("nested too deep")
                await self._handle(ws, _decode_frame(data))
            except (_Malformed, msgspec.DecodeError):
                self._pool._count("malformed")
                log.debug("relay %s: malformed message", self.label)

    async def _handle(self, ws: ClientConnection, frame: list[msgspec.Raw]) -> None:
        _quick_ack(self._sock)
        kind = _field(frame, 0, str)
        if kind == "EVENT":
            self._pool._on_event(self.url, _field(frame, 1, str), frame)
        elif kind == "EOSE":
            self._pool._on_eose(self.url, _field(frame, 1, str))
        elif kind == "OK":
            self._on_ok(_field(frame, 1, str), _field(frame, 2, bool), _field(frame, 3, str) if len(frame) > 3 else "")
        elif kind == "NOTICE":
            self._pool._count("notices")
            log.info("relay %s: NOTICE %r", self.label, _short(_field(frame, 1, str)))
        elif kind == "CLOSED":
            self._on_closed(ws, _field(frame, 1, str), _field(frame, 2, str) if len(frame) > 2 else "")
        elif kind == "AUTH":
            await self._answer_challenge(ws, _field(frame, 1, str))
        else:
            self._pool._count("unknown")
            log.debug("relay %s: unknown message type %r", self.label, _short(kind))

    def _on_ok(self, event_id: str, ok: bool, message: str) -> None:
        futures = self._pending_ok.pop(event_id, [])
        for fut in futures:
            if not fut.done():
                fut.set_result((ok, message))
        if not futures:
            log.debug("relay %s: OK for an event we are not waiting on: %s", self.label, _short(event_id))

    def _on_closed(self, ws: ClientConnection, sub_id: str, reason: str) -> None:
        log.info("relay %s: closed subscription %r: %r", self.label, _short(sub_id), _short(reason))
        sub = self._pool._subscription(sub_id)
        if sub is None:
            return
        if _is_auth_required(reason) and self._pool.auth_keys is not None and sub_id not in self._auth_retried:
            self._auth_retried.add(sub_id)
            self._pool._spawn(self._resubscribe_after_auth(ws, sub))
        else:
            sub._relay_gone(self.url)


class RelayPool:
    """Connections to several relays: publish to all, subscribe on all, verify everything that comes back."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        auth_keys: Keys | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        author_budget: tuple[int, float] = (200, 60.0),
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 30.0,
        dedup_size: int = DEFAULT_DEDUP_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        unique = list(dict.fromkeys(urls))
        if not unique:
            raise ValueError("a relay pool needs at least one relay URL")
        for url in unique:
            try:
                parse_uri(url)
            except InvalidURI:
                raise ValueError(f"not a ws:// or wss:// relay URL: {redact_url(url)!r}") from None
        if max_event_bytes < 1 or connect_timeout <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("max_event_bytes, connect_timeout and backoff must be positive (max >= initial)")
        self.auth_keys = auth_keys
        self.max_event_bytes = max_event_bytes
        self.max_message_bytes = max_event_bytes + MESSAGE_OVERHEAD
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._dedup_size = dedup_size
        self._queue_size = queue_size
        self._budget = _AuthorBudget(*author_budget)
        self._accepted = _Lru(dedup_size)  # ids already charged to their author's budget
        self._relays = {url: _Relay(self, url) for url in unique}
        self._subs: dict[str, Subscription] = {}
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._any_connected = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start one background connection task per relay and return at once."""
        if self._closed:
            raise RuntimeError("relay pool is closed")
        if self._started:
            return
        self._started = True
        for relay in self._relays.values():
            relay.start()

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109 - part of the public API
        """True once at least one relay is connected (False after `timeout` seconds otherwise)."""
        try:
            await asyncio.wait_for(self._any_connected.wait(), timeout)
        except TimeoutError:
            return self.connected > 0
        return True

    async def close(self) -> None:
        """Stop delivery, close every socket and cancel every task the pool started."""
        if self._closed:
            return
        self._closed = True
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            await sub._stop_worker()
        for relay in self._relays.values():
            await relay.close()
        background = list(self._background)
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)

    async def __aenter__(self) -> RelayPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- state --------------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return list(self._relays)

    def status(self) -> dict[str, bool]:
        """Relay URL -> connected now."""
        return {url: relay.connected for url, relay in self._relays.items()}

    @property
    def connected(self) -> int:
        return sum(relay.connected for relay in self._relays.values())

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (see `STAT_NAMES`)."""
        return dict(self._stats)

    # -- publish and subscribe ----------------------------------------------------------------------

    async def publish(self, event: Event, timeout: float = 5.0) -> list[PublishResult]:  # noqa: ASYNC109 - part of the public API
        """Send the event to every relay and collect each one's OK (or why there was none) within `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        return list(await asyncio.gather(*(relay.publish(event, deadline) for relay in self._relays.values())))

    async def subscribe(
        self,
        filters: Iterable[Mapping[str, Any]],
        handler: EventHandler,
        *,
        sub_id: str | None = None,
    ) -> Subscription:
        """Open a subscription on every relay (now, and again after each reconnect)."""
        if self._closed:
            raise RuntimeError("relay pool is closed")
        filter_list = [dict(f) for f in filters]
        if not filter_list:
            raise ValueError("a subscription needs at least one filter")
        sub_id = sub_id if sub_id is not None else secrets.token_hex(8)
        if not sub_id or len(sub_id) > MAX_SUB_ID_LEN:
            raise ValueError(f"subscription id must be 1-{MAX_SUB_ID_LEN} characters")
        if sub_id in self._subs:
            raise ValueError(f"subscription {sub_id!r} is already open")
        # Registering the subscription and choosing the relays to send it to happen without an await in
        # between, so a relay that connects concurrently sends it exactly once (from `_Relay._on_open`).
        connected = [relay for relay in self._relays.values() if relay.connected]
        sub = Subscription(
            self,
            sub_id,
            filter_list,
            handler,
            {relay.url for relay in connected},
            dedup_size=self._dedup_size,
            queue_size=self._queue_size,
        )
        self._subs[sub_id] = sub
        for relay in connected:
            await relay.send(["REQ", sub_id, *sub.req_filters(relay.url)])
        return sub

    # -- internals used by relays and subscriptions -------------------------------------------------

    def _count(self, name: str) -> None:
        self._stats[name] += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _subscription(self, sub_id: str) -> Subscription | None:
        sub = self._subs.get(sub_id)
        return None if sub is None or sub.closed else sub

    def _open_subscriptions(self) -> list[Subscription]:
        return [sub for sub in self._subs.values() if not sub.closed]

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.id) is sub:
            del self._subs[sub.id]
        for relay in self._relays.values():
            await relay.send(["CLOSE", sub.id])

    def _relay_up(self) -> None:
        self._any_connected.set()

    def _relay_down(self, url: str) -> None:
        if self.connected == 0:
            self._any_connected.clear()
        for sub in self._open_subscriptions():
            sub._relay_gone(url)

    def _on_eose(self, url: str, sub_id: str) -> None:
        sub = self._subscription(sub_id)
        if sub is not None:
            sub._offer_eose(url)

    def _on_event(self, url: str, sub_id: str, frame: list[msgspec.Raw]) -> None:
        """Run one EVENT through every check; queue it for the subscription's handler if it passes."""
        self._count("received")
        if len(frame) < 3:
            raise _Malformed("EVENT without an event")
        sub = self._subscription(sub_id)
        if sub is None:
            log.debug("relay %s: event for a subscription that is not open: %r", redact_url(url), _short(sub_id))
            return
        try:
            event = decode_event(frame[2], self.max_event_bytes)
        except FedaiError as err:
            self._count("oversized" if err.code is ErrorCode.TOO_LARGE else "invalid")
            log.debug("relay %s: rejected an event: %s", redact_url(url), err.code.value)
            return
        delivered_at = sub._delivered_at(event.id)
        if delivered_at is not None:
            self._count("duplicates")
            sub._note_seen(url, delivered_at)
            return
        if not matches_any(sub.filters, event):
            self._count("unmatched")
            log.debug("relay %s: event %s does not match subscription %s", redact_url(url), event.id, sub.id)
            return
        if not self._verified(url, event) or not self._within_budget(url, event):
            return
        sub._note_seen(url, event.created_at)
        if not sub._offer(event, url):
            self._count("dropped")
            log.warning("subscription %s: handler queue full, dropped event %s", sub.id, event.id)

    def _verified(self, url: str, event: Event) -> bool:
        try:
            verify_event(event)
        except FedaiError as err:
            self._count("invalid")
            log.info("relay %s: event %s failed verification: %s", redact_url(url), event.id, err.code.value)
            return False
        return True

    def _within_budget(self, url: str, event: Event) -> bool:
        """Charge the author once per distinct event (copies from other relays or subscriptions are free)."""
        if event.id in self._accepted:
            return True
        if not self._budget.allow(event.pubkey, time.monotonic()):
            self._count("over_budget")
            log.info(
                "relay %s: author %s is over budget; dropped event %s", redact_url(url), event.pubkey[:16], event.id
            )
            return False
        self._accepted.add(event.id)
        return True


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
