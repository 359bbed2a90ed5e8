"""Soak: N minutes at a fixed concurrency through a router and two mock nodes, with abusive traffic mixed in.

Starts PostgreSQL (`--database-url`, else $DATABASE_URL, else an embedded server in a temporary directory; a
configured server gets a fresh database of its own, dropped afterwards), a router and two nodes (mock runner)
as separate processes on loopback. Good traffic: `--concurrency` workers sending signed /infer requests back to
back. Abusive traffic (bench/soak_traffic.py): bad signatures, replays, oversized bodies, registration floods
from fresh keys, deep JSON, unknown models, each at `--abuse-rate` per second, and `--loris` slow-loris
connections. Not part of CI or `make test`: `make soak` (SOAK_MINUTES, default 10).

Prints one JSON document: per minute the router's RSS and open fds, the nodes' RSS, the router database's
connections (pg_stat_activity), node rows, good requests ok/err with p50/p99 latency, abusive outcomes by
HTTP status and code, slow-loris outcomes; what one registered node costs a router (bench/soak_calibration.py,
a separate router once the soak is over); and a summary: the RSS slope by least squares over every minute (raw),
over the minutes after `--warmup-min`, and that less the registry's growth at the calibrated per-node cost
(the verdict, bench/soak_figures.py), first vs last minute. Flat router memory under this mix is the pass
criterion (`summary.flat_memory`; docs/performance.md, "Soak").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil

from fedai.cli.processes import Supervisor
from fedai.protocol.keys import Keys
from fedai.store.migrations import migrate_dsn
from soak_calibration import calibrate
from soak_figures import memory_verdict
from soak_traffic import MODEL, Tally, Traffic
from support import spawn_node, spawn_router

MAX_REQUEST_BYTES = 256 * 1024  # the router's default ROUTER_MAX_REQUEST_BYTES (the oversized bodies pass it)
MIB = 1024 * 1024


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@contextlib.asynccontextmanager
async def soak_database(configured: str | None, tmp: Path) -> AsyncIterator[str]:
    """A migrated database for the soak alone: a new one on a configured server, else an embedded server."""
    if not configured:
        from fedai.store.embedded import start_embedded, stop_embedded

        dsn = await asyncio.to_thread(start_embedded, tmp / "pg")
        await migrate_dsn(dsn)
        try:
            yield dsn
        finally:
            await asyncio.to_thread(stop_embedded, tmp / "pg")
        return
    name = f"fedai_soak_{secrets.token_hex(4)}"
    parts = urlsplit(configured)
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    admin = await asyncpg.connect(configured)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate_dsn(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(configured)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def start_services(sup: Supervisor, dsn: str, logs: Path, keys: dict[str, Keys]) -> tuple[str, int, list[int]]:
    """A router and two mock nodes as processes; returns the router URL, its pid and the nodes' pids. The
    registration limits (per address and key) stay at their defaults: the flood must meet them."""
    router_url, router = spawn_router(sup, dsn, logs, keys["router"])
    nodes = [
        spawn_node(sup, name, router_url, keys["router"].pubkey, logs, keys[name])[1] for name in ("node-1", "node-2")
    ]
    return router_url, router.pid, [node.pid for node in nodes]


async def wait_until_serving(dsn: str, traffic: Traffic, node_keys: list[str], within_s: float = 60) -> None:
    """Both nodes registered (their rows exist) and a signed request answered through the router."""
    ends = time.monotonic() + within_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetchval("SELECT count(*) FROM nodes WHERE pubkey = ANY($1::text[])", node_keys)
            if rows == len(node_keys):
                async with aiohttp.ClientSession() as session:
                    status, _ = await traffic._post(session, "/infer", traffic.request().to_json())
                if status == 200:
                    return
            if time.monotonic() > ends:
                raise TimeoutError("the router never served a request through both nodes")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


class Probe:
    """Process and database figures sampled once per interval."""

    def __init__(self, conn: asyncpg.Connection, router_pid: int, node_pids: list[int]) -> None:
        self.conn = conn
        self.router = psutil.Process(router_pid)
        self.nodes = [psutil.Process(pid) for pid in node_pids]

    async def sample(self) -> dict[str, Any]:
        connections = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {
            "router_rss_mib": round(self.router.memory_info().rss / MIB, 2),
            "router_open_fds": self.router.num_fds(),
            "router_cpu_s": round(sum(self.router.cpu_times()[:2]), 2),
            "nodes_rss_mib": [round(p.memory_info().rss / MIB, 2) for p in self.nodes],
            "db_connections": connections,
            "nodes_in_db": await self.conn.fetchval("SELECT count(*) FROM nodes"),
        }


def summarise_interval(tally: Tally, seconds: float) -> dict[str, Any]:
    errors = sum(tally.good_errors.values())
    return {
        "good": {
            "ok": tally.good_ok,
            "err": errors,
            "errors": dict(tally.good_errors),
            "rps": round(tally.good_ok / seconds, 1),
            "p50_ms": percentile(tally.latencies_ms, 0.5),
            "p99_ms": percentile(tally.latencies_ms, 0.99),
        },
        "abuse": {kind: dict(outcomes) for kind, outcomes in sorted(tally.abuse.items())},
        "slowloris": dict(tally.loris),
    }


async def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    keys = {name: Keys.generate() for name in ("router", "node-1", "node-2")}
    sup = Supervisor()
    async with soak_database(args.database_url, tmp) as dsn:
        try:
            router_url, router_pid, node_pids = await asyncio.to_thread(start_services, sup, dsn, tmp / "logs", keys)
            traffic = Traffic(
                router_url,
                keys["router"].pubkey,
                args.concurrency,
                args.abuse_rate,
                args.loris,
                MAX_REQUEST_BYTES,
                args.flood_models,
                args.flood_aliases,
            )
            await wait_until_serving(dsn, traffic, [keys["node-1"].pubkey, keys["node-2"].pubkey])
            conn = await asyncpg.connect(dsn)
            try:
                report = await measure(args, traffic, Probe(conn, router_pid, node_pids))
            finally:
                await conn.close()
        except Exception:
            for child in sup.children:
                print(f"--- {child.name} log ---\n{child.tail(40)}", file=sys.stderr)
            raise
        finally:
            await asyncio.to_thread(sup.stop)
        calibration = None
        if args.calibration_nodes > 0:  # once the soak's processes are gone, on the same database
            calibration = await calibrate(
                dsn, tmp / "calibration", args.calibration_nodes, args.flood_models, args.flood_aliases
            )
    return with_verdict(report, calibration, args)


def with_verdict(
    report: dict[str, Any], calibration: dict[str, Any] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """The memory figures: the raw RSS slope over every minute, the slope after the warm-up, and the verdict, that
    slope less what the registry's growth costs at the calibrated per-node cost (bench/soak_figures.py)."""
    minutes = report["per_minute"]
    verdict = memory_verdict(
        [m["router_rss_mib"] for m in minutes],
        [m["nodes_in_db"] for m in minutes],
        interval_s=args.interval_s,
        warmup_min=args.warmup_min,
        node_cost=calibration["node_cost_mib"] if calibration else None,
        flat_mib_per_min=args.flat_slope_mib,
    )
    report["node_cost_calibration"] = calibration
    report["summary"] = {**verdict, **report["summary"]}
    return report


async def measure(args: argparse.Namespace, traffic: Traffic, probe: Probe) -> dict[str, Any]:
    baseline = await probe.sample()
    running = asyncio.create_task(traffic.run())
    minutes: list[dict[str, Any]] = []
    try:
        for minute in range(1, args.minutes + 1):
            started = time.monotonic()
            await asyncio.sleep(args.interval_s)
            if running.done():
                running.result()  # a crashed load generator is an error, not a quiet minute
            tally, traffic.tally = traffic.tally, Tally()
            sample = await probe.sample()
            minutes.append(
                {
                    "minute": minute,
                    **sample,
                    **summarise_interval(tally, time.monotonic() - started),
                    "slowloris_open": traffic.loris_open,
                }
            )
    finally:
        traffic.stopping.set()
        await asyncio.wait_for(running, timeout=90)
    rss = [m["router_rss_mib"] for m in minutes]
    first, last = minutes[0], minutes[-1]
    return {
        "benchmark": "soak",
        "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
        "database": "configured" if args.database_url else "embedded",
        "runner": "mock, two nodes",
        "settings": {
            "minutes": args.minutes,
            "interval_s": args.interval_s,
            "concurrency": args.concurrency,
            "abuse_rate_per_s_each": args.abuse_rate,
            "slowloris_connections": args.loris,
            "flood_models": args.flood_models,
            "flood_aliases": args.flood_aliases,
            "warmup_min": args.warmup_min,
            "calibration_nodes": args.calibration_nodes,
            "flat_slope_mib_per_min": args.flat_slope_mib,
            "model": MODEL,
        },
        "baseline": baseline,
        "per_minute": minutes,
        "summary": {
            "router_rss_mib_baseline_first_last": [baseline["router_rss_mib"], rss[0], rss[-1]],
            "router_open_fds_first_last": [first["router_open_fds"], last["router_open_fds"]],
            "db_connections_first_last": [first["db_connections"], last["db_connections"]],
            "nodes_in_db_first_last": [first["nodes_in_db"], last["nodes_in_db"]],
            "good_p50_ms_first_last": [first["good"]["p50_ms"], last["good"]["p50_ms"]],
            "good_p99_ms_first_last": [first["good"]["p99_ms"], last["good"]["p99_ms"]],
            "good_ok_total": sum(m["good"]["ok"] for m in minutes),
            "good_err_total": sum(m["good"]["err"] for m in minutes),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--minutes", type=int, default=int(os.environ.get("SOAK_MINUTES", "10")))
    parser.add_argument("--interval-s", type=float, default=60.0, help="length of one reported 'minute'")
    parser.add_argument("--concurrency", type=int, default=8, help="good-traffic workers")
    parser.add_argument("--abuse-rate", type=float, default=5.0, help="requests per second of each abuse kind")
    parser.add_argument("--loris", type=int, default=8, help="slow-loris connections kept open")
    parser.add_argument("--flood-models", type=int, default=4, help="models per flooded registration")
    parser.add_argument("--flood-aliases", type=int, default=4, help="aliases per flooded model")
    parser.add_argument("--flat-slope-mib", type=float, default=0.5, help="RSS slope (MiB/min) counted as flat")
    parser.add_argument("--warmup-min", type=float, default=2.0, help="minutes left out of the verdict's slope")
    parser.add_argument(
        "--calibration-nodes", type=int, default=200, help="registrations that measure one node's cost (0: none)"
    )
    args = parser.parse_args()
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    with tempfile.TemporaryDirectory(prefix="fedai-soak-") as tmp:
        report = asyncio.run(soak(args, Path(tmp)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
