"""The router's payment reconciliation against real Postgres (a database of its own, so the anomaly counts are
this test's): unpaid requests past expiry are expired, claims and refunds held by a dead replica are released,
anomalies are counted in metrics, and a second pass changes nothing."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.store.db import create_pool
from fedai_router.reconcile import Reconciler
from fedai_router.settlement_settings import SettlementSettings
from tests.support import database

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with database.test_database() as dsn:
        own = await create_pool(dsn, min_size=1, max_size=2)
        yield own
        await own.close()


def at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


async def request(pool: asyncpg.Pool, expires_at: float, payee_state: str, claimed_at: float | None = None) -> str:
    """A payment request with one node payee in `payee_state` (claimed at `claimed_at` when held)."""
    rid, payment_hash = secrets.token_hex(32), secrets.token_hex(32)
    await pool.execute(
        "INSERT INTO payment_requests (id, quote, client, expires_at, event) VALUES ($1, 'q', 'c', $2, $3)",
        rid,
        at(expires_at),
        json.dumps({}),
    )
    held = claimed_at is not None
    await pool.execute(
        "INSERT INTO payment_payees (payment_hash, request_id, role, payee, amount_msat, bolt11, expires_at, state,"
        " claimed_by, claimed_at) VALUES ($1, $2, 'node', 'n', 1000, 'lnbc1', $3, $4, $5, $6)",
        payment_hash,
        rid,
        at(expires_at),
        payee_state,
        "dead-replica" if held else None,
        at(claimed_at) if claimed_at is not None else None,
    )
    return payment_hash


async def refund(pool: asyncpg.Pool, state: str, attempts: int, claimed_at: float | None = None) -> str:
    payment_hash = secrets.token_hex(32)
    await pool.execute(
        "INSERT INTO refunds (payment_hash, role, amount_msat, destination, idempotency_key, state, attempts,"
        " claimed_by, claimed_at) VALUES ($1, 'router_fee', 500, 'client@example.invalid', $2, $3, $4, $5, $6)",
        payment_hash,
        f"k-{payment_hash}",
        state,
        attempts,
        "dead-worker" if claimed_at is not None else None,
        at(claimed_at) if claimed_at is not None else None,
    )
    return payment_hash


async def states(pool: asyncpg.Pool, table: str) -> dict[str, str]:
    rows = await pool.fetch(f"SELECT payment_hash, state FROM {table}")  # noqa: S608 - a fixed table name
    return {r["payment_hash"]: r["state"] for r in rows}


async def test_a_pass_expires_releases_and_flags_then_the_next_changes_nothing(pool: asyncpg.Pool) -> None:
    now = time.time()
    unpaid = await request(pool, now - 60, "issued")
    fresh = await request(pool, now + HOUR, "issued")
    dead_claim = await request(pool, now + HOUR, "paid", claimed_at=now - 600)
    live_claim = await request(pool, now + HOUR, "paid", claimed_at=now - 5)
    paid_never_served = await request(pool, now - 60, "released")
    stuck_refund = await refund(pool, "paying", 1, claimed_at=now - 600)
    await refund(pool, "failed", 8)
    await refund(pool, "pending", 5)
    registry = CollectorRegistry()
    reconciler = Reconciler(pool, PaymentMetrics("router", registry), SettlementSettings(stale_s=300))

    first = await reconciler.run()

    assert first == {
        "expired_requests": 2,  # the unpaid one and the paid-never-served one
        "expired_payees": 1,
        "released_claims": 1,
        "released_refunds": 1,
        "paid_never_consumed": 1,
        "refund_failed": 1,
        "refund_failing": 1,  # the pending one tried 5 times (the released one was tried once)
    }
    payees = await states(pool, "payment_payees")
    assert payees[unpaid] == "expired" and payees[fresh] == "issued"
    assert (payees[dead_claim], payees[live_claim], payees[paid_never_served]) == ("released", "paid", "released")
    assert (await states(pool, "refunds"))[stuck_refund] == "pending"

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("fedai_router_payments_reconciled_total", action="released_claims") == 1
    assert sample("fedai_router_payment_requests", state="expired") == 2
    assert sample("fedai_router_payment_requests", state="issued") == 3
    assert sample("fedai_router_payment_payees", role="node", state="released") == 2
    assert sample("fedai_router_payment_anomalies", kind="paid_never_consumed") == 1
    assert sample("fedai_router_payment_anomalies", kind="refund_failed") == 1

    second = await reconciler.run()

    assert {k: v for k, v in second.items() if k.startswith(("expired", "released"))} == dict.fromkeys(
        ("expired_requests", "expired_payees", "released_claims", "released_refunds"), 0
    )
    assert sample("fedai_router_payments_reconciled_total", action="released_claims") == 1
