"""Token buckets per key: a client's pubkey, or a source address (this process's view; see runbooks/router-ops.md
for replicas)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from fedai.protocol.errors import ErrorCode, FedaiError

DEFAULT_MAX_KEYS = 100_000


class RateLimiter:
    """`limit` requests per `window_s` per key, refilled continuously; bursts up to `limit`.

    At most `max_keys` buckets are kept, least recently used first out, so a flood of fresh keys (free to
    make) or addresses costs O(1) per request and bounded memory; a forgotten key starts again with a full
    bucket, which only matters once more than `max_keys` keys are active within one window."""

    def __init__(self, limit: int, window_s: float, max_keys: int = DEFAULT_MAX_KEYS, what: str = "client") -> None:
        self.limit = limit
        self.rate = limit / window_s
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._message = f"too many requests from this {what}"

    def check(self, key: str, now: float | None = None) -> None:
        """Take one token for `key` or raise `rate_limited` with the time until the next token."""
        now = time.monotonic() if now is None else now
        buckets = self._buckets
        tokens, last = buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            wait_ms = math.ceil((1.0 - tokens) / self.rate * 1000)
            buckets[key] = (tokens, now)
            buckets.move_to_end(key)
            raise FedaiError(ErrorCode.RATE_LIMITED, self._message, retry_after_ms=wait_ms)
        buckets[key] = (tokens - 1.0, now)
        buckets.move_to_end(key)
        if len(buckets) > self._max_keys:
            buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
