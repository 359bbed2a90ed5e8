"""A pool of Nostr relay connections: subscribe on all, publish to all, verify everything that comes back.

Relays are not trusted: every event a relay sends is size-checked before parsing, schema-checked, matched against
the subscription's filters, verified (id recomputed, BIP-340 signature), charged to a per-author budget and
de-duplicated before a handler sees it. Each relay's connection (`fedai.nostr.relay`) reconnects on its own and
re-sends the open subscriptions (`fedai.nostr.subscription`) after every reconnect; NIP-42 AUTH challenges are
answered when the pool has keys. Logs carry relay URLs (without userinfo or query, which may hold tokens),
subscription ids, event ids and relay-supplied reasons, never event content or keys.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from fedai.nostr.filters import matches_any
from fedai.nostr.frames import MESSAGE_OVERHEAD, Frame, Malformed, short
from fedai.nostr.limits import AuthorBudget, Lru
from fedai.nostr.relay import AUTH_KIND, LIBRARY_MARGIN, PublishResult, RelayConnection, RelayHooks, RelaySettings
from fedai.nostr.subscription import RESUBSCRIBE_MARGIN_S, EventHandler, Subscription
from fedai.observability.logging import redact_url
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import DEFAULT_MAX_EVENT_BYTES, Event, decode_event, verify_event
from fedai.protocol.keys import Keys

__all__ = [  # the names this module has always offered, wherever they live now
    "AUTH_KIND",
    "DEFAULT_DEDUP_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "LIBRARY_MARGIN",
    "MAX_SUB_ID_LEN",
    "MESSAGE_OVERHEAD",
    "RESUBSCRIBE_MARGIN_S",
    "STAT_NAMES",
    "EventHandler",
    "PublishResult",
    "RelayPool",
    "Subscription",
]

log = logging.getLogger("fedai.nostr")

DEFAULT_DEDUP_SIZE = 65_536
DEFAULT_QUEUE_SIZE = 10_000
MAX_SUB_ID_LEN = 64  # NIP-01

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
        self._budget = AuthorBudget(*author_budget)
        self._accepted = Lru(dedup_size)  # ids already charged to their author's budget
        settings = RelaySettings(auth_keys, self.max_message_bytes, connect_timeout, backoff_initial, backoff_max)
        hooks = RelayHooks(
            count=self._count,
            up=self._relay_up,
            down=self._relay_down,
            open_subscriptions=self._open_subscriptions,
            subscription=self._subscription,
            on_event=self._on_event,
            on_eose=self._on_eose,
            spawn=self._spawn,
        )
        self._relays = {url: RelayConnection(url, settings, hooks) for url in unique}
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
        # between, so a relay that connects concurrently sends it exactly once (from `RelayConnection._on_open`).
        connected = [relay for relay in self._relays.values() if relay.connected]
        sub = Subscription(
            sub_id,
            filter_list,
            handler,
            {relay.url for relay in connected},
            unsubscribe=self._unsubscribe,
            count=self._count,
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

    # -- the checks every event passes --------------------------------------------------------------

    def _on_event(self, url: str, sub_id: str, frame: Frame) -> None:
        """Run one EVENT through every check; queue it for the subscription's handler if it passes."""
        self._count("received")
        if len(frame) < 3:
            raise Malformed("EVENT without an event")
        sub = self._subscription(sub_id)
        if sub is None:
            log.debug("relay %s: event for a subscription that is not open: %r", redact_url(url), short(sub_id))
            return
        event = self._decoded(url, frame)
        if event is None or self._seen_before(url, sub, event) or not self._matches(url, sub, event):
            return
        if not self._verified(url, event) or not self._within_budget(url, event):
            return
        sub._note_seen(url, event.created_at)
        if not sub._offer(event, url):
            self._count("dropped")
            log.warning("subscription %s: handler queue full, dropped event %s", sub.id, event.id)

    def _decoded(self, url: str, frame: Frame) -> Event | None:
        """The frame's event, size- and schema-checked (None, counted, when it is not one)."""
        try:
            return decode_event(frame[2], self.max_event_bytes)
        except FedaiError as err:
            self._count("oversized" if err.code is ErrorCode.TOO_LARGE else "invalid")
            log.debug("relay %s: rejected an event: %s", redact_url(url), err.code.value)
            return None

    def _seen_before(self, url: str, sub: Subscription, event: Event) -> bool:
        """Already delivered to this subscription: a duplicate (still moves this relay's resubscribe point)."""
        delivered_at = sub._delivered_at(event.id)
        if delivered_at is None:
            return False
        self._count("duplicates")
        sub._note_seen(url, delivered_at)
        return True

    def _matches(self, url: str, sub: Subscription, event: Event) -> bool:
        if matches_any(sub.filters, event):
            return True
        self._count("unmatched")
        log.debug("relay %s: event %s does not match subscription %s", redact_url(url), event.id, sub.id)
        return False

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
