"""Auction round trip: RFB → BID → AWARD between two routers over a local relay, until the provider accepted.

The embedded relay runs as its own process (`python -m fedai.nostr`); requester A (no nodes) and provider B
(one registered node serving the model) are real `RouterService`s in this process, each on its own database
(`--database-url`, else $DATABASE_URL, else an embedded server in a temporary directory). A learns B from B's
announcements, so each auction ends as soon as every expected bidder (B) has bid — the round trip is measured
independently of the TTL. Each round: A publishes a signed RFB, B verifies it, quotes and publishes a signed bid,
A verifies the bid, chooses, stores the job and publishes the signed award, B verifies the award against its
open bid and stores its job row. Prints one JSON document; target p50 ≤ 50 ms (issue 5, part 7).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fedai.cli.processes import Supervisor, free_port, python_module, wait_for_line
from fedai.protocol.federation import Rfb
from fedai.protocol.keys import Keys
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai.store.migrations import migrate_dsn
from fedai_router.config import RouterSettings
from fedai_router.service import RouterService

MODEL = "bench-auction-model"
TARGET_P50_MS = 50.0
RELAY_LINE = re.compile(r"relay listening on (ws://\S+)")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(percentile(samples, 0.95), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "max_ms": round(max(samples), 3),
    }


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def databases(dsn: str, names: list[str]) -> AsyncIterator[list[str]]:
    """Fresh, migrated databases on the server of `dsn`, dropped afterwards."""
    admin = await asyncpg.connect(dsn)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsns = [with_database(dsn, name) for name in names]
    for each in dsns:
        await migrate_dsn(each)
    try:
        yield dsns
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            for name in names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {within} s")
        await asyncio.sleep(0.02)


def node_descriptor() -> NodeDescriptor:
    return NodeDescriptor(
        endpoint="http://127.0.0.1:9",  # never called: the benchmark stops at the accepted award
        models=[
            ModelInfo(
                id=MODEL,
                context_window=8192,
                max_tokens=1024,
                latency_estimate_ms=120.0,
                pricing=Pricing(input_msat=1000, output_msat=2000),
            )
        ],
        capacity=Capacity(max_concurrent=64),
    )


def rfb() -> Rfb:
    return Rfb(
        job_type="text-generation",
        model=MODEL,
        privacy=1,
        input_tokens=200,
        max_tokens=256,
        max_price_msat=100_000,
        job_hash=secrets.token_hex(32),
        deadline_ms=int(time.time() * 1000) + 60_000,
    )


async def run(relay_url: str, dsn_a: str, dsn_b: str, rounds: int, warmup: int) -> dict[str, Any]:
    # both routers announce loopback endpoints: allowed as on the devnet (peer caps endpoints are judged)
    common: dict[str, Any] = {
        "relays": [relay_url],
        "peer_rate": 10_000_000,
        "log_level": "WARNING",
        "allow_private_endpoints": True,
    }
    a = RouterService(RouterSettings(keys=Keys.generate(), db_url=dsn_a, **common))
    b = RouterService(RouterSettings(keys=Keys.generate(), db_url=dsn_b, **common))
    await a.start()
    await b.start()
    try:
        node = Keys.generate()

        async def heartbeat() -> None:
            await b.registry.record_heartbeat(node.pubkey, node_descriptor())

        await heartbeat()
        auctioneer, bidder = a.federation.auctioneer, b.federation.bidder
        assert auctioneer is not None and bidder is not None
        assert await auctioneer.ready() and await bidder.ready()
        await until(lambda: b.federation.backpressure == "NORMAL", 10, "provider has capacity")
        peers = a.federation.peers
        await until(
            lambda: any(p.pubkey == b.pubkey for p in peers.peers_for(MODEL, "text-generation", 1)),
            30,
            "requester learned the provider from its announcements",
        )
        awarded_ms: list[float] = []
        accepted_ms: list[float] = []
        for i in range(warmup + rounds):
            if i % 50 == 0:
                await heartbeat()  # keep the node fresh on long runs
            started = time.perf_counter()
            awarded = await auctioneer.auction(rfb(), ttl_s=5.0)
            if awarded is None:
                raise RuntimeError(f"round {i}: no award")
            done_award = time.perf_counter()
            if not await bidder.wait_accepted(awarded.job_id, 5.0):
                raise RuntimeError(f"round {i}: the provider did not accept the award")
            done = time.perf_counter()
            if i >= warmup:
                awarded_ms.append((done_award - started) * 1000)
                accepted_ms.append((done - started) * 1000)
        jobs_a = await a.pool.fetchval("SELECT count(*) FROM federation_jobs WHERE role = 'requester'")
        jobs_b = await b.pool.fetchval("SELECT count(*) FROM federation_jobs WHERE role = 'provider'")
    finally:
        await a.stop()
        await b.stop()
    return {"awarded": summary(awarded_ms), "accepted": summary(accepted_ms), "jobs": [jobs_a, jobs_b]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedai-bench-auction-") as tmp:
        dsn = args.database_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = start_embedded(Path(tmp) / "pg")
        sup = Supervisor()
        try:
            relay = sup.spawn(
                "relay",
                python_module("fedai.nostr", "--port", str(free_port())),
                dict(os.environ),
                Path(tmp) / "relay.log",
            )
            relay_url = wait_for_line(relay, RELAY_LINE, timeout=30).group(1)
            suffix = secrets.token_hex(4)

            async def go() -> dict[str, Any]:
                async with databases(dsn, [f"bench_auction_a_{suffix}", f"bench_auction_b_{suffix}"]) as (da, db):
                    return await run(relay_url, da, db, args.rounds, args.warmup)

            result = asyncio.run(go())
        except Exception:
            for child in sup.children:
                print(f"--- {child.name} log ---\n{child.tail(40)}", file=sys.stderr)
            raise
        finally:
            sup.stop()
    if result["jobs"] != [args.rounds + args.warmup] * 2:
        raise RuntimeError(f"stored jobs {result['jobs']} != rounds")
    print(
        json.dumps(
            {
                "benchmark": "auction_round_trip",
                "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
                "database": "embedded" if not args.database_url else "configured",
                "setup": "relay process (embedded nostr-sdk relay) + requester and provider routers in this process",
                "rounds": args.rounds,
                "rfb_to_award_published_ms": result["awarded"],
                "rfb_to_award_accepted_ms": result["accepted"],
                "target": {"p50_ms": TARGET_P50_MS},
                "meets_target": result["accepted"]["p50_ms"] <= TARGET_P50_MS,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
