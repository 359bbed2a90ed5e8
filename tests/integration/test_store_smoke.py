from __future__ import annotations

import asyncpg

from fedai.store.nonces import PostgresReplayGuard


async def test_nonce_claim_is_unique(db_pool: asyncpg.Pool) -> None:
    guard = PostgresReplayGuard(db_pool)
    assert await guard.claim("a" * 64, 2e9) is True
    assert await guard.claim("a" * 64, 2e9) is False
