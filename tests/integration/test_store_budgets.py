"""The budgets of bound client wallets (fedai_router.store.budgets) on real Postgres: a reservation never takes
a binding past its budget, even when replicas reserve at the same moment, and what was not spent is given back."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from fedai.store.db import create_pool
from fedai_router.store.budgets import give_back, reserve, spent

pytestmark = pytest.mark.integration


def binding() -> str:
    return "apikey:" + secrets.token_hex(32)


async def test_reservations_stay_within_the_budget_and_unspent_parts_come_back(db_pool: asyncpg.Pool) -> None:
    who = binding()
    assert await reserve(db_pool, who, 600, 1000)
    assert not await reserve(db_pool, who, 500, 1000)  # 1100 > 1000: refused, nothing counted
    assert await spent(db_pool, who) == 600
    await give_back(db_pool, who, 200)  # the reservation spent 400 of its 600
    assert await reserve(db_pool, who, 600, 1000) and await spent(db_pool, who) == 1000
    assert not await reserve(db_pool, binding(), 1001, 1000)  # more than the whole budget, on a first call too
    await give_back(db_pool, who, 5000)
    assert await spent(db_pool, who) == 0  # never below zero


async def test_replicas_reserving_at_once_never_overspend(database_url: str) -> None:
    who = binding()
    pools = [await create_pool(database_url, min_size=1, max_size=4) for _ in range(2)]  # two replicas
    try:
        results = await asyncio.gather(*(reserve(pools[i % 2], who, 300, 1000) for i in range(8)))
        assert sum(results) == 3  # 3 × 300 fit in 1000, a fourth does not, whoever asked first
        assert await spent(pools[0], who) == 900
    finally:
        for pool in pools:
            await pool.close()
