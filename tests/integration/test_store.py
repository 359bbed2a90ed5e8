"""fedai.store against real PostgreSQL: migrations under concurrency, the replay guard, group-committed writes."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import asyncpg
import pytest

from fedai.store.db import DedicatedConnection
from fedai.store.migrations import load_migrations, migrate_dsn
from fedai.store.nonces import PostgresReplayGuard
from tests.support.database import _with_database


@pytest.fixture
async def empty_database(database_url: str) -> str:
    name = f"fedai_empty_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return _with_database(database_url, name)


async def test_migrations_apply_once_even_when_replicas_start_together(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate_dsn(empty_database) for _ in range(4)))
    applied = [name for r in results for name in r]
    assert applied == [m.name for m in load_migrations()]  # each migration applied exactly once overall
    conn = await asyncpg.connect(empty_database)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in load_migrations()]
        assert await migrate_dsn(empty_database) == []
    finally:
        await conn.close()


async def test_failed_migration_is_rolled_back_and_not_recorded(empty_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t1 (x int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE t2 (x int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate_dsn(empty_database, tmp_path)
    conn = await asyncpg.connect(empty_database)
    try:
        assert [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")] == ["0001"]
        assert await conn.fetchval("SELECT to_regclass('t2')") is None  # nothing half-written
    finally:
        await conn.close()


def test_duplicate_migration_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="duplicate"):
        load_migrations(tmp_path)


async def test_replay_guard_claims_once_across_concurrent_and_batched_claims(
    db_pool: asyncpg.Pool, database_url: str
) -> None:
    guard = PostgresReplayGuard(db_pool, DedicatedConnection(database_url))
    ids = [secrets.token_hex(32) for _ in range(50)]
    until = time.time() + 60
    # every id submitted twice at once: exactly one claim of each succeeds, even inside one batch
    results = await asyncio.gather(*(guard.claim(i, until) for i in ids + ids))
    assert results[:50].count(True) + results[50:].count(True) == 50
    assert all(a != b for a, b in zip(results[:50], results[50:], strict=True))
    assert await guard.claim(ids[0], until) is False


async def test_prune_forgets_only_expired_ids(db_pool: asyncpg.Pool) -> None:
    guard = PostgresReplayGuard(db_pool)
    old, fresh = secrets.token_hex(32), secrets.token_hex(32)
    assert await guard.claim(old, time.time() - 10)
    assert await guard.claim(fresh, time.time() + 60)
    assert await guard.prune() >= 1
    remaining = {r["id"] for r in await db_pool.fetch("SELECT id FROM nonces WHERE id = ANY($1)", [old, fresh])}
    assert remaining == {fresh}


async def test_dedicated_connection_reconnects_after_loss(db_pool: asyncpg.Pool, database_url: str) -> None:
    conn = DedicatedConnection(database_url)
    first = (await conn.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]
    await db_pool.execute("SELECT pg_terminate_backend($1)", first)
    pids: list[int] = []
    for _ in range(50):  # the loss surfaces either as one failed query or as a closed connection
        try:
            pids.append((await conn.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"])
            break
        except Exception:  # lost mid-query: asyncpg may say so in several ways; the next query must work
            await asyncio.sleep(0.02)
    assert pids and pids[0] != first  # a fresh backend served the query
    await conn.close()
