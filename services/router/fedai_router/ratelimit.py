"""Token buckets per key: a client's pubkey, or a source address (this process's view; see runbooks/router-ops.md
for replicas)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fedai.protocol.errors import ErrorCode, FedaiError

DEFAULT_MAX_KEYS = 100_000
FORGET_PER_CHECK = 2  # idle buckets forgotten per check at most: more than the one a check can add


class RateLimiter:
    """`limit` requests per `window_s` per key, refilled continuously; bursts up to `limit`.

    Buckets are kept least recently used first. A bucket idle for a whole window is full again, the same as no
    bucket, so each check forgets up to `FORGET_PER_CHECK` such buckets from the old end: O(1) per request, and
    what is held follows the keys active within one window, not every key ever seen. At most `max_keys` buckets
    are kept whatever the rate of fresh keys (free to make): past that the least recently used one is dropped,
    which only changes a verdict once more than `max_keys` keys are active within one window."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        what: str = "client",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.rate = limit / window_s
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last check)
        self._max_keys = max_keys
        self._clock = clock
        self._message = f"too many requests from this {what}"

    def check(self, key: str, now: float | None = None) -> None:
        """Take one token for `key` or raise `rate_limited` with the time until the next token."""
        now = self._clock() if now is None else now
        buckets = self._buckets
        tokens, last = buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - last) * self.rate)
        taken = tokens >= 1.0
        buckets[key] = (tokens - 1.0 if taken else tokens, now)
        buckets.move_to_end(key)
        self._forget_idle(now)
        if not taken:
            wait_ms = math.ceil((1.0 - tokens) / self.rate * 1000)
            raise FedaiError(ErrorCode.RATE_LIMITED, self._message, retry_after_ms=wait_ms)

    def _forget_idle(self, now: float) -> None:
        """Drop up to `FORGET_PER_CHECK` buckets idle for a whole window from the old end, then any over the cap."""
        buckets = self._buckets
        idle_before = now - self.window_s
        for _ in range(FORGET_PER_CHECK):
            oldest = next(iter(buckets.values()))
            if oldest[1] > idle_before:
                break
            buckets.popitem(last=False)
        while len(buckets) > self._max_keys:
            buckets.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._buckets

    def __len__(self) -> int:
        return len(self._buckets)
