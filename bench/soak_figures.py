"""The soak's memory verdict, pure: least-squares slopes, the warm-up cut, and the RSS slope corrected for the
nodes the registration flood legitimately adds to the registry (docs/performance.md, "Soak").

A router that takes a registration holds the node until it is pruned (ROUTER_NODE_RETENTION_S): that memory is
the registry doing its job, bounded by ROUTER_MAX_NODES and ROUTER_MAX_MODEL_NAMES, not a leak. The verdict
subtracts it: corrected slope = raw RSS slope − (cost of one registered node) × (registry growth per minute),
both slopes fitted over the minutes after the warm-up (caches, pools and the replay window fill during it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def slope(values: Sequence[float]) -> float | None:
    """Least-squares slope per step (per interval); None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def per_minute(values: Sequence[float], interval_s: float) -> float | None:
    """The least-squares slope of samples taken every `interval_s`, per minute."""
    per_step = slope(values)
    return None if per_step is None else per_step * 60 / interval_s


def after_warmup(values: Sequence[float], warmup_min: float, interval_s: float) -> list[float]:
    """The samples from the one taken as the warm-up ends (sample i is taken after i + 1 intervals)."""
    first = max(0, round(warmup_min * 60 / interval_s) - 1)
    return list(values[first:])


def node_cost_mib(rss_before_mib: float, rss_after_mib: float, nodes_added: int) -> float | None:
    """What one registered node costs the router: the RSS it grew by, per node added (never below zero)."""
    if nodes_added <= 0:
        return None
    return max(0.0, rss_after_mib - rss_before_mib) / nodes_added


def memory_verdict(
    rss_mib: Sequence[float],
    nodes: Sequence[int],
    *,
    interval_s: float,
    warmup_min: float,
    node_cost: float | None,
    flat_mib_per_min: float,
) -> dict[str, Any]:
    """Raw and corrected RSS slopes (MiB/min) and whether memory is flat. The verdict is the corrected slope after
    the warm-up; without a node cost (no calibration) it falls back to the raw slope after the warm-up."""
    rss_after, nodes_after = after_warmup(rss_mib, warmup_min, interval_s), after_warmup(nodes, warmup_min, interval_s)
    raw_all = per_minute(rss_mib, interval_s)
    raw = per_minute(rss_after, interval_s)
    node_growth = per_minute([float(n) for n in nodes_after], interval_s)
    corrected = None
    if raw is not None and node_growth is not None and node_cost is not None:
        corrected = raw - node_cost * node_growth
    verdict = corrected if corrected is not None else raw
    return {
        "router_rss_slope_mib_per_min": _round(raw_all),
        "warmup_min": warmup_min,
        "router_rss_slope_after_warmup_mib_per_min": _round(raw),
        "registry_growth_nodes_per_min": _round(node_growth),
        "node_cost_mib": _round(node_cost, 4),
        "router_rss_slope_corrected_mib_per_min": _round(corrected),
        "verdict_slope": "corrected" if corrected is not None else "after_warmup",
        "flat_memory": None if verdict is None else verdict <= flat_mib_per_min,  # None: too few minutes to say
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
