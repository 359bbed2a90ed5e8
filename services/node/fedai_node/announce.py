"""node.announce on relays: the signed descriptor, published at start and every `NODE_ANNOUNCE_S`.

The relay pool is imported only when `NODE_RELAYS` is set, so a node without relays never loads it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedai.observability.logging import redact_url
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.service.tasks import cancel_and_wait

if TYPE_CHECKING:
    from fedai.nostr import RelayPool

log = logging.getLogger("fedai_node.announce")

PUBLISH_TIMEOUT_S = 5.0
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 60.0


class Announcer:
    """Publishes `build()` to every relay; when no relay accepts it, retries with capped backoff."""

    def __init__(
        self,
        *,
        keys: Keys,
        relays: Sequence[str],
        interval_s: float,
        build: Callable[[], Event],
        on_result: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._keys = keys
        self._relays = list(relays)
        self._interval_s = interval_s
        self._build = build
        self._on_result = on_result
        self._pool: RelayPool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self._relays or self._task is not None:
            return
        from fedai.nostr import RelayPool

        self._pool = RelayPool(self._relays, auth_keys=self._keys)
        await self._pool.start()
        self._task = asyncio.create_task(self._run(), name="fedai-node-announce")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self) -> None:
        retry = FIRST_RETRY_S
        while True:
            if await self.publish_once():
                delay, retry = self._interval_s, FIRST_RETRY_S
            else:
                delay, retry = min(retry, self._interval_s), min(retry * 2, MAX_RETRY_S)
            await asyncio.sleep(delay)

    async def publish_once(self) -> bool:
        """Publish a freshly signed announce; True if at least one relay accepted it."""
        assert self._pool is not None, "start() first"
        if self._pool.connected == 0:  # just started or all relays down: give a connection a moment
            await self._pool.wait_connected(PUBLISH_TIMEOUT_S)
        event = self._build()
        try:
            results = await self._pool.publish(event, timeout=PUBLISH_TIMEOUT_S)
        except Exception:
            log.exception("announce publish error")
            self._on_result("error")
            return False
        accepted = sum(1 for r in results if r.ok)
        for r in results:
            if not r.ok:
                log.warning("relay refused announce", extra={"relay": redact_url(r.url), "reason": r.message})
        self._on_result("ok" if accepted else "failed")
        log.info("announced", extra={"accepted": accepted, "relays": len(results)})
        return accepted > 0
