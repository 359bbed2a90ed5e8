"""Refunds against real PostgreSQL: one refund per paid invoice, one worker at a time however many race, a retry
keeps the destination's invoice, a final failure stays failed."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fedai.store.db import create_pool
from fedai.store.refunds import Refund, RefundStore

WORKERS = 8


@pytest.fixture
async def second_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


def refund() -> Refund:
    payment_hash = secrets.token_hex(32)
    return Refund(payment_hash, "node", 2_500, "client@example.invalid", f"refund:{payment_hash}")


async def test_a_paid_invoice_has_one_refund(db_pool: asyncpg.Pool) -> None:
    store = RefundStore(db_pool)
    r = refund()
    assert await store.open(r)
    again = Refund(r.payment_hash, r.role, 9_999, "elsewhere@example.invalid", "refund:another-key")
    assert not await store.open(again)
    row = await db_pool.fetchrow("SELECT amount_msat, destination FROM refunds WHERE payment_hash = $1", r.payment_hash)
    assert row is not None and (row["amount_msat"], row["destination"]) == (2_500, r.destination)


async def test_concurrent_workers_pay_a_refund_once(db_pool: asyncpg.Pool, second_pool: asyncpg.Pool) -> None:
    stores = [RefundStore(db_pool), RefundStore(second_pool)]
    for _ in range(10):
        r = refund()
        assert await stores[0].open(r)
        workers = [secrets.token_hex(8) for _ in range(WORKERS)]
        attempts = await asyncio.gather(*(stores[i % 2].begin(r.payment_hash, w) for i, w in enumerate(workers)))
        held = [(w, a) for w, a in zip(workers, attempts, strict=True) if a is not None]
        assert len(held) == 1
        worker, attempt = held[0]
        assert (attempt.amount_msat, attempt.destination, attempt.attempts) == (2_500, r.destination, 1)
        assert not await stores[1].settle(r.payment_hash, workers[(workers.index(worker) + 1) % WORKERS])
        assert await stores[1].settle(r.payment_hash, worker)
        assert await stores[0].begin(r.payment_hash, secrets.token_hex(8)) is None  # paid: never again


async def test_a_retry_pays_the_same_invoice_and_a_final_failure_stays(db_pool: asyncpg.Pool) -> None:
    store = RefundStore(db_pool)
    r = refund()
    await store.open(r)
    first = await store.begin(r.payment_hash, "w1")
    assert first is not None and first.invoice is None
    assert await store.set_invoice(r.payment_hash, "w1", "lnbcrt25n1refund")
    assert not await store.set_invoice(r.payment_hash, "w1", "lnbcrt25n1other")  # fixed once
    assert await store.fail(r.payment_hash, "w1", "destination unreachable")
    retry = await store.begin(r.payment_hash, "w2")
    assert retry is not None and (retry.invoice, retry.attempts) == ("lnbcrt25n1refund", 2)
    assert await store.fail(r.payment_hash, "w2", "x" * 10_000, final=True)
    row = await db_pool.fetchrow(
        "SELECT state, attempts, last_error FROM refunds WHERE payment_hash = $1", r.payment_hash
    )
    assert row is not None and (row["state"], row["attempts"], len(row["last_error"])) == ("failed", 2, 500)
    assert await store.begin(r.payment_hash, "w3") is None


async def test_a_dead_workers_refund_is_taken_again(db_pool: asyncpg.Pool) -> None:
    store = RefundStore(db_pool)
    r = refund()
    await store.open(r)
    assert await store.begin(r.payment_hash, "dead") is not None
    assert await store.begin(r.payment_hash, "other") is None
    assert await store.release_stale(time.time() - 3600) == 0
    assert await store.release_stale(time.time() + 1) >= 1
    again = await store.begin(r.payment_hash, "other")
    assert again is not None and again.attempts == 2
