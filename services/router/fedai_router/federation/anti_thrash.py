"""Anti-thrash for auctions: a job is not auctioned again within a cooldown unless the caller retries after a
failure, and at most `max_attempts` auctions run per job within that window; a retry keeps excluding every peer
that failed the job before. Memory is bounded (least recently auctioned jobs forgotten first)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import Counter

from fedai.protocol.errors import ErrorCode, FedaiError

MAX_JOBS_TRACKED = 10_000  # job keys remembered


@dataclass(slots=True)
class _History:
    auctions: int
    last_at: float
    excluded: set[str]


class AntiThrash:
    def __init__(self, cooldown_s: float, max_attempts: int, events: Counter) -> None:
        self.cooldown_s = cooldown_s  # ROUTER_REAUCTION_COOLDOWN_MS
        self.max_attempts = max_attempts  # ROUTER_FED_MAX_ATTEMPTS
        self.events = events  # fedai_router_auction_events_total
        self._history: OrderedDict[str, _History] = OrderedDict()

    def admit(self, key: str, now: float, *, retry: bool, exclude: Collection[str]) -> frozenset[str]:
        """Apply the anti-thrash rules for one more auction of `key`; returns every peer excluded for it. Raises
        `no_capacity` (with `retry_after_ms`) when the rules refuse it."""
        cooldown = self.cooldown_s
        past = self._history.get(key)
        if past is not None and now - past.last_at >= cooldown:
            del self._history[key]
            past = None
        if past is None:
            self._history[key] = _History(1, now, set(exclude))
            while len(self._history) > MAX_JOBS_TRACKED:
                self._history.popitem(last=False)
            return frozenset(exclude)
        wait_ms = math.ceil((past.last_at + cooldown - now) * 1000)
        if not retry:
            self.events.labels("rfb", "cooldown").inc()
            raise FedaiError(ErrorCode.NO_CAPACITY, "this job was auctioned moments ago", retry_after_ms=wait_ms)
        if past.auctions >= self.max_attempts:
            self.events.labels("rfb", "retry_budget").inc()
            raise FedaiError(ErrorCode.NO_CAPACITY, "this job's auction retry budget is spent", retry_after_ms=wait_ms)
        past.auctions += 1
        past.last_at = now
        past.excluded.update(exclude)
        self._history.move_to_end(key)
        return frozenset(past.excluded)
