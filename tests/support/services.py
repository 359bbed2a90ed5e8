"""Routers and nodes as real OS processes (the way operators run them), for end-to-end tests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedai.cli.processes import Child, Supervisor, free_port, python_module, wait_for_http
from fedai.protocol.keys import Keys
from tests.support.router import ADMIN, ADMIN_TOKEN, TEST_ADDR_RATE_LIMIT

ADMIN_DIGEST = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()


def base_env() -> dict[str, str]:
    """The test's environment without any ROUTER_*/NODE_* settings leaking into the services."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "NODE_"))}


@dataclass
class Service:
    child: Child
    url: str
    keys: Keys


@dataclass
class Network:
    sup: Supervisor
    logs: Path

    def router(self, name: str, keys: Keys, database_url: str, **env: str) -> Service:
        port = free_port()
        child = self.sup.spawn(
            name,
            python_module("fedai_router"),
            {
                **base_env(),
                "ROUTER_PRIVATE_KEY": keys.secret_hex,
                "ROUTER_PORT": str(port),
                "DATABASE_URL": database_url,
                "ROUTER_ALLOW_PRIVATE_ENDPOINTS": "true",
                "ROUTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "ROUTER_ADMIN_TOKEN_SHA256": ADMIN_DIGEST,
                "ROUTER_ADDR_RATE_LIMIT_MAX": str(TEST_ADDR_RATE_LIMIT),
                **env,
            },
            self.logs / f"{name}.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(child, url + "/health", timeout=30)
        return Service(child, url, keys)

    def node(self, name: str, router: Service, **env: str) -> Service:
        keys = Keys.generate()
        port = free_port()
        child = self.sup.spawn(
            name,
            python_module("fedai_node"),
            {
                **base_env(),
                "NODE_PRIVATE_KEY": keys.secret_hex,
                "NODE_PORT": str(port),
                "NODE_RUNNER": "mock",
                "ROUTER_ENDPOINT": router.url,
                "ROUTER_PUBLIC_KEY": router.keys.pubkey,
                "NODE_HEARTBEAT_MS": "500",
                **env,
            },
            self.logs / f"{name}.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(child, url + "/health", timeout=30)
        return Service(child, url, keys)


@contextmanager
def network(logs: Path) -> Iterator[Network]:
    sup = Supervisor()
    try:
        yield Network(sup, logs)
    finally:
        sup.stop()


def wait_until_node_listed(router: Service, node: Service, timeout: float = 15) -> None:
    wait_for_http(
        router.child,
        router.url + "/status",
        timeout=timeout,
        ready=lambda r: any(n["pubkey"] == node.keys.pubkey and n["fresh"] for n in r.json()["nodes"]),
        what=f"{node.child.name} listed by {router.child.name}",
        headers=ADMIN,
    )
