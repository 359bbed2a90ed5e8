"""Replay protection: the event id is the nonce; a receiver remembers each accepted id until it can no
longer pass the freshness check. `fedai.store.nonces.PostgresReplayGuard` is the authoritative guard
shared by router replicas; `MemoryReplayGuard` serves single-process receivers and unit tests."""

from __future__ import annotations

import time
from typing import Protocol

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event

# Remember ids a little longer than the window so clock steps on either side cannot reopen it.
RETENTION_MARGIN_S = 5


def retain_until(event: Event, skew_s: int) -> float:
    """Unix time after which `event` would be refused as stale anyway, so its id can be forgotten."""
    return float(event.created_at + skew_s + RETENTION_MARGIN_S)


class ReplayGuard(Protocol):
    async def claim(self, event_id: str, retain_until: float) -> bool:
        """Record `event_id`; True if it was new, False if it had been seen."""
        ...


async def claim_or_raise(guard: ReplayGuard, event: Event, skew_s: int) -> None:
    if not await guard.claim(event.id, retain_until(event, skew_s)):
        raise FedaiError(ErrorCode.REPLAY, "this event id has already been accepted")


class MemoryReplayGuard:
    """Per-process guard. Bounded by the freshness window: expired ids are pruned as new ones arrive."""

    def __init__(self, prune_every: int = 1024) -> None:
        self._seen: dict[str, float] = {}
        self._prune_every = prune_every
        self._since_prune = 0

    async def claim(self, event_id: str, retain_until: float) -> bool:
        if event_id in self._seen:
            return False
        self._seen[event_id] = retain_until
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self.prune()
        return True

    def prune(self, now: float | None = None) -> None:
        cutoff = time.time() if now is None else now
        self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
        self._since_prune = 0

    def __len__(self) -> int:
        return len(self._seen)
