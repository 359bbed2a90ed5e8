"""Router overhead: the same signed workload sent directly to a node and through the router.

Starts a real node (mock runner) and a real router as separate processes on loopback, with PostgreSQL
(`--database-url`, else $DATABASE_URL, else an embedded server in a temporary directory). For concurrency
1, 8 and 32 it measures req/s and latency percentiles direct vs via the router, the router-added p50, and
router CPU-ms per request (user+system time of the router process over the run / requests).
Prints one JSON document. The load generator shares the machine's cores with the services it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from fedai.cli.processes import Supervisor
from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from support import prepare_database, start_network

CONCURRENCY = (1, 8, 32)
MODEL = "fedai-mock-1"
SEED_BASELINE = {"rps_c1": 78, "p50_ms_c1": 12.3, "rps_best": 145, "router_cpu_ms": 7.0}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_load(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for body in queue:
                start = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status} from {url}: {(await resp.read())[:200]!r}")
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 3),
        "p95_ms": round(percentile(latencies, 0.95), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def sign_batch(keys: Keys, to: str, n: int) -> list[bytes]:
    payload = InferenceRequest(model=MODEL, prompt="What is 2+2? Answer briefly.", max_tokens=16)
    return [seal(keys, Kind.INFER_REQUEST, payload, to=to, nonce=True).to_json() for _ in range(n)]


async def measure(
    router_url: str, node_url: str, router_pid: int, node_pid: int, keys: dict[str, Keys], requests: int
) -> list[dict[str, Any]]:
    results = []
    for concurrency in CONCURRENCY:
        n = requests * (1 if concurrency == 1 else 2)
        # warm both paths (connections, caches, JIT-free but allocator-warm)
        await run_load(node_url + "/infer", sign_batch(keys["router"], keys["node"].pubkey, 200), concurrency)
        await run_load(router_url + "/infer", sign_batch(keys["client"], keys["router"].pubkey, 200), concurrency)
        direct = await run_load(node_url + "/infer", sign_batch(keys["router"], keys["node"].pubkey, n), concurrency)
        bodies = sign_batch(keys["client"], keys["router"].pubkey, n)
        router_cpu, node_cpu = cpu_seconds(router_pid), cpu_seconds(node_pid)
        via = await run_load(router_url + "/infer", bodies, concurrency)
        router_cpu, node_cpu = cpu_seconds(router_pid) - router_cpu, cpu_seconds(node_pid) - node_cpu
        results.append(
            {
                "concurrency": concurrency,
                "direct_to_node": direct,
                "via_router": via,
                "router_added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
                "router_cpu_ms_per_request": round(router_cpu * 1000 / n, 3),
                "node_cpu_ms_per_request": round(node_cpu * 1000 / n, 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--requests", type=int, default=2000, help="requests at concurrency 1 (2x at 8 and 32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedai-bench-") as tmp:
        dsn = args.database_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = start_embedded(Path(tmp) / "pg")
        asyncio.run(prepare_database(dsn))
        keys = {name: Keys.generate() for name in ("router", "node", "client")}
        sup = Supervisor()
        try:
            router_url, node_url, router_pid, node_pid = start_network(sup, dsn, Path(tmp) / "logs", keys)
            results = asyncio.run(measure(router_url, node_url, router_pid, node_pid, keys, args.requests))
        except Exception:
            for child in sup.children:
                print(f"--- {child.name} log ---\n{child.tail(40)}", file=sys.stderr)
            raise
        finally:
            sup.stop()
    c1 = results[0]
    best_rps = max(r["via_router"]["rps"] for r in results)
    print(
        json.dumps(
            {
                "benchmark": "router_overhead",
                "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
                "database": "embedded" if not args.database_url else "configured",
                "runner": "mock (no model latency)",
                "results": results,
                "summary": {
                    "router_added_p50_ms_c1": c1["router_added_p50_ms"],
                    "router_cpu_ms_per_request_c1": c1["router_cpu_ms_per_request"],
                    "router_cpu_ms_per_request_min": min(r["router_cpu_ms_per_request"] for r in results),
                    "best_rps_via_router": best_rps,
                    "vs_seed_best_rps": round(best_rps / SEED_BASELINE["rps_best"], 2),
                },
                "targets": {"router_added_p50_ms_c1": 1.0, "router_cpu_ms_per_request": 0.7, "rps_via_router": 1450},
                "seed_baseline": SEED_BASELINE,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
