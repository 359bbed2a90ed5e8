"""Scheduler selection time: `rank()` over 100, 1,000, 10,000 and 100,000 registered nodes serving one model,
plus the cost of one `begin` + `end` pair (two live-load syncs into the scheduler table) around each call.

Nodes have varied prices, capacities, loads, observed latencies, failure records, trust and freshness, so ties
do not dominate. A second variant caps the price so that 90% of the nodes are filtered out. Prints one JSON
document; the target is ≤ 1 ms at 10,000 nodes (docs/decisions.md#performance-targets).
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_router.index import NodeIndex
from fedai_router.node_state import NodeState
from fedai_router.scheduler import Demand, Policy, rank

SIZES = (100, 1_000, 10_000, 100_000)
TARGET_NODES, TARGET_MS = 10_000, 1.0
MODEL = "bench-model"
NOW = 1_800_000_000.0
K = 3 + 8  # max_attempts + SPARE_CANDIDATES, as the router ranks
POLICY = Policy()


def build(n: int, rng: random.Random) -> tuple[NodeIndex, list[NodeState], float]:
    """An index of `n` nodes serving MODEL; returns it, its nodes and the build time per node (µs)."""
    index = NodeIndex()
    nodes = []
    started = time.perf_counter()
    for i in range(n):
        price = rng.randint(200, 5000)
        capacity = rng.randint(1, 16)
        info = ModelInfo(
            id=MODEL,
            context_window=rng.choice([4096, 8192, 32768]),
            max_tokens=4096,
            pricing=Pricing(input_msat=price, output_msat=price + rng.randint(0, 2000)),
            latency_estimate_ms=rng.uniform(100, 5000),
        )
        load = Capacity(max_concurrent=capacity, in_flight=rng.randint(0, capacity))
        desc = NodeDescriptor(endpoint=f"http://n{i}.bench", models=[info], capacity=load)
        pubkey = rng.getrandbits(256).to_bytes(32, "big").hex()
        seen = NOW - (rng.uniform(0, 20) if rng.random() > 0.05 else 120.0)  # 5% stale
        nodes.append(index.upsert(pubkey, desc, verified=rng.random() > 0.1, heartbeat=True, seen=seen))
    build_us = (time.perf_counter() - started) / n * 1e6
    for node in nodes:
        index.set_manifest_trust(node, rng.uniform(0.2, 0.9))
        for _ in range(rng.randint(0, 6)):
            index.succeeded(node, rng.uniform(80, 6000))
        if rng.random() < 0.1:
            index.failed(node, "upstream_error", now=NOW - 100)  # an old failure: on the record, cooldown over
        if rng.random() < 0.03:
            index.failed(node, "upstream_error", now=NOW)  # cooling down now
    return index, nodes, build_us


def timed(fn: Callable[[], object], calls: int) -> list[float]:
    """Wall time of each call, in ms, after a warm-up."""
    for _ in range(min(50, calls)):
        fn()
    out = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


def stats(samples_ms: list[float], scale: float = 1.0, digits: int = 4) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "median": round(statistics.median(ordered) * scale, digits),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * scale, digits),
    }


def measure(n: int, rng: random.Random) -> dict[str, Any]:
    index, nodes, build_us = build(n, rng)
    table = index.tables[MODEL]
    calls = max(500, min(3000, 10_000_000 // n))
    demand = Demand(model=MODEL, input_tokens=500, max_tokens=256)
    prices = np.ceil((500 * table.input_msat[: table.n] + 256 * table.output_msat[: table.n]) / 1000)
    capped = Demand(model=MODEL, input_tokens=500, max_tokens=256, max_price_msat=int(np.percentile(prices, 10)))
    pick = random.Random(1)

    def choose(d: Demand) -> Callable[[], object]:
        return lambda: rank(table, d, now=NOW, policy=POLICY, k=K, rng=pick)

    eligible = len(rank(table, demand, now=NOW, policy=POLICY, k=n))
    eligible_capped = len(rank(table, capped, now=NOW, policy=POLICY, k=n))
    sample = [nodes[i] for i in pick.sample(range(n), min(n, 1000))]
    pairs = iter(sample * (calls // len(sample) + 2))

    def begin_end() -> None:
        node = next(pairs)
        index.begin(node)
        index.end(node)

    return {
        "nodes": n,
        "calls": calls,
        "eligible": eligible,
        "rank_ms": stats(timed(choose(demand), calls)),
        "rank_90pct_filtered_ms": stats(timed(choose(capped), calls)) | {"eligible": eligible_capped},
        "begin_plus_end_us": stats(timed(begin_end, calls), scale=1000, digits=2),
        "upsert_us": round(build_us, 1),
    }


def main() -> None:
    rng = random.Random(42)
    results = [measure(n, rng) for n in SIZES]
    at_target = next(r for r in results if r["nodes"] == TARGET_NODES)
    document = {
        "benchmark": "scheduler",
        "k": K,
        "target": {"nodes": TARGET_NODES, "rank_ms_max": TARGET_MS},
        "meets_target": at_target["rank_ms"]["median"] <= TARGET_MS,
        "results": results,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
