"""Node health: consecutive failures, cooldowns, and a rolling success/latency window. Pure logic; the
registry keeps one `Health` per node and `fedai_router.store.health` shares it through Postgres."""

from __future__ import annotations

from dataclasses import dataclass

COOLDOWN_BASE_S = 0.5
COOLDOWN_MAX_S = 30.0
QUARANTINE_S = 60.0
# Beta prior for reliability: a node nobody has measured yet counts as 19 successes in 20, so newcomers are
# not buried under incumbents (the simulator's price-war scenario measured the cost of a stronger prior).
PRIOR_SUCCESSES = 19.0
PRIOR_FAILURES = 1.0
LATENCY_EWMA = 0.2


@dataclass(slots=True)
class Health:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    quarantined_until: float = 0.0
    last_failure: str = ""
    # rolling window, as last loaded from Postgres (all replicas) plus this replica's unflushed outcomes
    successes: int = 0
    failures: int = 0
    latency_ms: float | None = None  # observed latency of successful calls (EWMA)
    latency_samples: int = 0

    @property
    def reliability(self) -> float:
        """Smoothed success rate over the window: (s + 19) / (s + f + 20)."""
        return (self.successes + PRIOR_SUCCESSES) / (self.successes + self.failures + PRIOR_SUCCESSES + PRIOR_FAILURES)

    @property
    def probing(self) -> bool:
        """After failures, until a success: one call at a time (half-open), so a node that is still broken
        costs one failed call per cooldown instead of its whole capacity."""
        return self.consecutive_failures > 0

    def blocked_until(self) -> float:
        return self.cooldown_until if self.cooldown_until > self.quarantined_until else self.quarantined_until


def cooldown_s(consecutive_failures: int, retry_after_s: float | None = None) -> float:
    """Exponential in consecutive failures (0.5, 1, 2, … s), capped; never shorter than the node's Retry-After
    (itself capped, so a node cannot take itself out of rotation for long by asking)."""
    backoff = min(COOLDOWN_MAX_S, COOLDOWN_BASE_S * 2.0 ** max(0, consecutive_failures - 1))
    if retry_after_s is not None:
        backoff = max(backoff, min(retry_after_s, COOLDOWN_MAX_S))
    return backoff


def record_failure(
    health: Health, now: float, code: str, *, retry_after_s: float | None = None, quarantine: bool = False
) -> None:
    """Count a failure. Calls that were already in flight when the node broke fail while it cools down: they
    count against its reliability but do not escalate the cooldown, so one outage is one step of backoff."""
    health.failures += 1
    health.last_failure = code
    if quarantine:
        health.quarantined_until = max(health.quarantined_until, now + QUARANTINE_S)
    if health.cooldown_until > now:
        if retry_after_s is not None:
            health.cooldown_until = max(health.cooldown_until, now + min(retry_after_s, COOLDOWN_MAX_S))
        return
    health.consecutive_failures += 1
    health.cooldown_until = now + cooldown_s(health.consecutive_failures, retry_after_s)


def record_success(health: Health, latency_ms: float) -> None:
    health.consecutive_failures = 0
    health.cooldown_until = 0.0
    health.successes += 1
    health.latency_samples += 1
    health.latency_ms = (
        latency_ms if health.latency_ms is None else (1 - LATENCY_EWMA) * health.latency_ms + LATENCY_EWMA * latency_ms
    )
