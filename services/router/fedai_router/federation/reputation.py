"""Peer reputation on the requester side: completed vs failed jobs, and a circuit breaker.

Counts live in memory, warmed from `federation_jobs` at start (the job rows are the durable record). A peer
with `failures` consecutive failures is skipped for `cooldown_s`; after that it may win again, and one more
failure re-opens the breaker at once (half-open); a success closes it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from fedai_router.store.federation import peer_outcomes

MAX_PEERS = 10_000


@dataclass(slots=True)
class PeerRecord:
    done: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    open_until: float = 0.0

    @property
    def score(self) -> float:
        """Laplace-smoothed success rate: an unknown peer is 0.5, each outcome moves it."""
        return (self.done + 1) / (self.done + self.failed + 2)


class Reputation:
    def __init__(
        self,
        *,
        failures: int = 3,
        cooldown_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if failures < 1 or cooldown_s < 0:
            raise ValueError("breaker needs failures >= 1 and cooldown_s >= 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._max = max_peers
        self._peers: OrderedDict[str, PeerRecord] = OrderedDict()

    def get(self, peer: str) -> PeerRecord:
        record = self._peers.get(peer)
        return record if record is not None else PeerRecord()

    def _record(self, peer: str) -> PeerRecord:
        record = self._peers.get(peer)
        if record is None:
            record = self._peers[peer] = PeerRecord()
            while len(self._peers) > self._max:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return record

    def record(self, peer: str, ok: bool) -> None:
        """Count one finished job with `peer`."""
        r = self._record(peer)
        if ok:
            r.done += 1
            r.consecutive_failures = 0
            r.open_until = 0.0
            return
        r.failed += 1
        r.consecutive_failures += 1
        if r.consecutive_failures >= self.failures:
            r.open_until = self._clock() + self.cooldown_s

    def score(self, peer: str) -> float:
        return self.get(peer).score

    def breaker_until(self, peer: str) -> float:
        return self.get(peer).open_until

    def is_open(self, peer: str, now: float | None = None) -> bool:
        return self.breaker_until(peer) > (self._clock() if now is None else now)

    async def load(self, pool: asyncpg.Pool) -> None:
        """Warm the counts from the stored jobs (the breaker starts closed)."""
        for peer, (done, failed) in (await peer_outcomes(pool)).items():
            r = self._record(peer)
            r.done, r.failed = max(r.done, done), max(r.failed, failed)
