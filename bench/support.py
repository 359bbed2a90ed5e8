"""Shared by the benchmarks: a router and a node as real processes on loopback, and a fresh database."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from fedai.cli.processes import Child, Supervisor, free_port, python_module, wait_for_http
from fedai.protocol.keys import Keys
from fedai.store.migrations import migrate_dsn


async def prepare_database(dsn: str) -> None:
    await migrate_dsn(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE nodes, nonces, metering_records, quotes, node_health, node_stats")
    finally:
        await conn.close()


def _service_env() -> dict[str, str]:
    """This process's environment without any ROUTER_/NODE_ settings of the shell that runs the benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "NODE_"))}


def spawn_router(
    sup: Supervisor, dsn: str, logs: Path, keys: Keys, extra_env: dict[str, str] | None = None
) -> tuple[str, Child]:
    """A router process on a free port, with the client rate limits out of the way (every benchmark client is
    127.0.0.1 and would otherwise meet the per-key and per-address limits) and any `extra_env` settings; returns
    its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    router = sup.spawn(
        "router",
        python_module("fedai_router"),
        {
            **_service_env(),
            "ROUTER_PRIVATE_KEY": keys.secret_hex,
            "ROUTER_PORT": str(port),
            "DATABASE_URL": dsn,
            "ROUTER_ALLOW_PRIVATE_ENDPOINTS": "true",
            "ROUTER_RATE_LIMIT_MAX": "1000000000",
            "ROUTER_ADDR_RATE_LIMIT_MAX": "1000000000",
            "ROUTER_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        },
        logs / "router.log",
    )
    wait_for_http(router, url + "/health", timeout=30)
    return url, router


def spawn_node(
    sup: Supervisor,
    name: str,
    router_url: str,
    router_key: str,
    logs: Path,
    keys: Keys,
    extra_env: dict[str, str] | None = None,
) -> tuple[str, Child]:
    """A node process (mock runner unless `extra_env` says otherwise) heartbeating to the router; returns its URL
    once it answers /health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = sup.spawn(
        name,
        python_module("fedai_node"),
        {
            **_service_env(),
            "NODE_PRIVATE_KEY": keys.secret_hex,
            "NODE_PORT": str(port),
            "NODE_RUNNER": "mock",
            "ROUTER_ENDPOINT": router_url,
            "ROUTER_PUBLIC_KEY": router_key,
            "NODE_CAPACITY_MAX": "256",
            "NODE_HEARTBEAT_MS": "1000",
            "NODE_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        },
        logs / f"{name}.log",
    )
    wait_for_http(node, url + "/health", timeout=60)
    return url, node


def start_network(
    sup: Supervisor, dsn: str, logs: Path, keys: dict[str, Keys], node_env: dict[str, str] | None = None
) -> tuple[str, str, int, int]:
    """Start a router and one node (mock runner unless `node_env` says otherwise); wait until registered."""
    router_url, router = spawn_router(sup, dsn, logs, keys["router"])
    node_url, node = spawn_node(sup, "node", router_url, keys["router"].pubkey, logs, keys["node"], node_env)
    wait_for_http(
        router,
        router_url + "/status",
        timeout=30,
        ready=lambda r: r.json()["nodes"]["fresh"] > 0,
        what="node registered",
    )
    return router_url, node_url, router.pid, node.pid
