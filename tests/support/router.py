"""Run a router in-process on loopback against the test database."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from fedai.protocol.keys import Keys
from fedai_router.app import create_app
from fedai_router.config import RouterSettings
from fedai_router.service import RouterService
from tests.support.servers import free_port, serve_app

# the operator token every test router accepts (ROUTER_ADMIN_TOKEN_SHA256 holds its sha256)
ADMIN_TOKEN = "fo-test-operator-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# test clients share 127.0.0.1: the per-address limit is raised unless a test sets its own
TEST_ADDR_RATE_LIMIT = 1_000_000

TABLES = (
    "edge_refund_links",
    "payment_settlements",
    "payment_payees",
    "payment_requests",
    "refunds",
    "payment_claims",
    "wallet_budgets",
    "chains",
    "nodes",
    "nonces",
    "metering_records",
    "quotes",
    "node_health",
    "node_stats",
    "dispatch_attempts",
    "node_manifests",
    "peers",
    "federation_jobs",
    "offload_quotes",
    "admin_nodes",
    "admin_peers",
    "admin_api_keys",
    "admin_settings",
    "admin_audit",
    "node_admin_prices",
    "node_admin_routers",
    "node_admin_state",
    "node_admin_audit",
)


@dataclass
class RunningRouter:
    url: str
    service: RouterService
    keys: Keys

    @property
    def pubkey(self) -> str:
        return self.keys.pubkey

    @property
    def admin(self) -> dict[str, str]:
        """Headers carrying the operator token (for /status in full, /metrics, /route/explain, /federation/peers)."""
        return dict(ADMIN)


async def reset_database(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")


@asynccontextmanager
async def running_router(database_url: str, **overrides: Any) -> AsyncIterator[RunningRouter]:
    keys = overrides.pop("keys", None) or Keys.generate()
    port = overrides.pop("port", None) or free_port()
    settings = RouterSettings(
        keys=keys,
        db_url=database_url,
        allow_private_endpoints=True,
        registry_refresh_ms=100,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        admin_token_sha256=frozenset({hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}),
        addr_rate_limit_max=TEST_ADDR_RATE_LIMIT,
    )
    settings = dataclasses.replace(settings, **overrides)
    app = create_app(settings)
    async with serve_app(app, port=port) as url:
        yield RunningRouter(url=url, service=app.state.service, keys=keys)
