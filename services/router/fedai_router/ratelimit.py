"""Per-client token buckets (this process's view; see runbooks/router-ops.md for replicas)."""

from __future__ import annotations

import math
import time

from fedai.protocol.errors import ErrorCode, FedaiError


class RateLimiter:
    """`limit` requests per `window_s` per key, refilled continuously; bursts up to `limit`."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.rate = limit / window_s
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_keys = max_keys

    def check(self, key: str, now: float | None = None) -> None:
        """Take one token for `key` or raise `rate_limited` with the time until the next token."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            wait_ms = math.ceil((1.0 - tokens) / self.rate * 1000)
            self._buckets[key] = (tokens, now)
            raise FedaiError(ErrorCode.RATE_LIMITED, "too many requests from this client", retry_after_ms=wait_ms)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self._evict(now)

    def _evict(self, now: float) -> None:
        full_after = self.limit / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
