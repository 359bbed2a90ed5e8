"""Trust in a node, 0..1: starts from what its signed manifest claims, and gives way to what the router
observes as calls accumulate. Pure."""

from __future__ import annotations

from fedai_router.health import Health

# After this many observed calls, observation and the manifest weigh the same.
OBSERVATION_HALF_WEIGHT = 20


def effective_trust(manifest_trust: float, health: Health) -> float:
    observed = health.successes + health.failures
    if observed == 0:
        return manifest_trust
    weight = observed / (observed + OBSERVATION_HALF_WEIGHT)
    return (1 - weight) * manifest_trust + weight * health.reliability
