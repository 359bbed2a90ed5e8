"""A router-wide retry budget: failovers may add at most `ratio` extra calls per request (plus a small
steady allowance), so a failing fleet cannot turn every request into several. Pure apart from the clock."""

from __future__ import annotations

import time


class RetryBudget:
    def __init__(self, ratio: float, min_per_s: float, burst: float = 20.0) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._last) * self.min_per_s)
        self._last = now

    def on_request(self, now: float | None = None) -> None:
        """Every first attempt earns `ratio` of a retry."""
        self._refill(time.monotonic() if now is None else now)
        self._tokens = min(self.burst, self._tokens + self.ratio)

    def try_retry(self, now: float | None = None) -> bool:
        """Spend one retry if the budget has it."""
        self._refill(time.monotonic() if now is None else now)
        if self._tokens >= 1.0 - 1e-9:  # ten requests at ratio 0.1 earn exactly one retry despite rounding
            self._tokens -= 1.0
            return True
        return False
