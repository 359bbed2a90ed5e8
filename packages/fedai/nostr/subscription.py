"""One open subscription of a relay pool: its filters, its delivery queue and task, de-duplication, EOSE.

The pool checks every event before it offers it here; a subscription only decides whether it already
delivered that event, queues it for the handler, and tracks which relays have sent EOSE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fedai.nostr.limits import Lru
from fedai.observability.logging import redact_url
from fedai.protocol.event import Event

log = logging.getLogger("fedai.nostr")

EventHandler = Callable[[Event, str], Awaitable[None]]

RESUBSCRIBE_MARGIN_S = 60  # a re-sent REQ asks again from (newest event seen from that relay) minus this


class Subscription:
    """An open REQ on every relay of a pool. Events reach the handler in order, one at a time, from its own task,
    so a handler may publish or close the subscription without stalling the relay connections.

    `unsubscribe` is the pool's half of `close()` (forget it, send CLOSE); `count` bumps one of the pool's stats.
    """

    def __init__(
        self,
        sub_id: str,
        filters: list[dict[str, Any]],
        handler: EventHandler,
        expected_eose: set[str],
        *,
        unsubscribe: Callable[[Subscription], Awaitable[None]],
        count: Callable[[str], None],
        dedup_size: int,
        queue_size: int,
    ) -> None:
        self.id = sub_id
        self.filters = filters
        self.eose = asyncio.Event()
        self._unsubscribe = unsubscribe
        self._count = count
        self._handler = handler
        self._eose_pending = expected_eose
        self._eose_from: set[str] = set()
        self._eose_queued: set[str] = set()
        self._delivered = Lru(dedup_size)
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
        await self._unsubscribe(self)
        await self._stop_worker()

    def req_filters(self, url: str) -> list[dict[str, Any]]:
        """The filters for a REQ to `url`: after a reconnect, `since` moves up to what that relay already sent."""
        last = self._last_seen.get(url)
        if last is None:
            return self.filters
        since = max(0, last - RESUBSCRIBE_MARGIN_S)
        return [{**f, "since": max(int(f.get("since", 0)), since)} for f in self.filters]

    # -- called by the pool and its relays ---------------------------------------------------------

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
            self._count("handler_errors")
            log.warning(
                "subscription %s: handler raised %s on event %s from %s",
                self.id,
                type(exc).__name__,
                event.id,
                redact_url(url),
            )
