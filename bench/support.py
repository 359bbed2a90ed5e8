"""Shared by the benchmarks: a router and a node as real processes on loopback, and a fresh database."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from fedai.cli.processes import Supervisor, free_port, python_module, wait_for_http
from fedai.protocol.keys import Keys
from fedai.store.migrations import migrate_dsn


async def prepare_database(dsn: str) -> None:
    await migrate_dsn(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE nodes, nonces, metering_records, quotes, node_health, node_stats")
    finally:
        await conn.close()


def start_network(
    sup: Supervisor, dsn: str, logs: Path, keys: dict[str, Keys], node_env: dict[str, str] | None = None
) -> tuple[str, str, int, int]:
    """Start a router and one node (mock runner unless `node_env` says otherwise); wait until registered."""
    router_port, node_port = free_port(), free_port()
    router_url, node_url = f"http://127.0.0.1:{router_port}", f"http://127.0.0.1:{node_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "NODE_"))}
    router = sup.spawn("router", python_module("fedai_router"), {
        **base, "ROUTER_PRIVATE_KEY": keys["router"].secret_hex, "ROUTER_PORT": str(router_port),
        "DATABASE_URL": dsn, "ROUTER_ALLOW_PRIVATE_ENDPOINTS": "true", "ROUTER_RATE_LIMIT_MAX": "1000000000",
        "ROUTER_ADDR_RATE_LIMIT_MAX": "1000000000", "ROUTER_LOG_LEVEL": "WARNING",
    }, logs / "router.log")  # fmt: skip
    wait_for_http(router, router_url + "/health", timeout=30)
    node = sup.spawn("node", python_module("fedai_node"), {
        **base, "NODE_PRIVATE_KEY": keys["node"].secret_hex, "NODE_PORT": str(node_port), "NODE_RUNNER": "mock",
        "ROUTER_ENDPOINT": router_url, "ROUTER_PUBLIC_KEY": keys["router"].pubkey, "NODE_CAPACITY_MAX": "256",
        "NODE_HEARTBEAT_MS": "1000", "NODE_LOG_LEVEL": "WARNING", **(node_env or {}),
    }, logs / "node.log")  # fmt: skip
    wait_for_http(node, node_url + "/health", timeout=60)
    wait_for_http(router, router_url + "/status", timeout=30,
                  ready=lambda r: r.json()["nodes"]["fresh"] > 0, what="node registered")  # fmt: skip
    return router_url, node_url, router.pid, node.pid
