"""Scheduled pruning against real Postgres: rows past their retention go, recent ones stay, metering records and
nonces are never touched; batches are bounded, concurrent pruners split the work; stale nodes leave Postgres and
the replica's memory (their tables too) while the scheduler and /route/explain keep answering; the router runs the
job on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from fedai_router.config import Retention
from fedai_router.housekeeping import MEMORY
from fedai_router.store import nodes as node_store
from fedai_router.store import retention as store
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

DAY = 86_400
LONG = Retention(interval_s=3600)  # the scheduled run never fires during a test; the tests call it


def _key() -> str:
    return Keys.generate().pubkey


async def _quote(pool: asyncpg.Pool, quote_id: str, expired_days_ago: float) -> None:
    await pool.execute(
        "INSERT INTO quotes (id, request_id, client, model, node, input_tokens, max_output_tokens, input_msat,"
        " output_msat, router_fee_msat, total_msat, expires_at)"
        " VALUES ($1, 'r', 'c', 'm', 'n', 1, 1, 1, 1, 0, 2, now() - make_interval(secs => $2))",
        quote_id,
        expired_days_ago * DAY,
    )


async def _aged(pool: asyncpg.Pool, days: float) -> dict[str, str]:
    """One row of every pruned table (and of the two never pruned), `days` old; returns their keys."""
    age = days * DAY
    unique = _key()[:12]
    keys = {"quote": unique, "chain": unique, "request": unique, "manifest": _key(), "health": _key()}
    await _quote(pool, keys["quote"], days)
    await pool.execute(
        "INSERT INTO chains (id, origin_id, client, request_event, answer_event, created_at)"
        " VALUES ($1, 'o', 'c', '{}'::jsonb, '{}'::jsonb, now() - make_interval(secs => $2))",
        keys["chain"],
        age,
    )
    await pool.execute(
        "INSERT INTO dispatch_attempts (request_id, node, attempt, outcome, latency_ms, created_at)"
        " VALUES ($1, 'n', 1, 'upstream_error', 1.0, now() - make_interval(secs => $2))",
        keys["request"],
        age,
    )
    await pool.execute(
        "INSERT INTO node_manifests (pubkey, event_id, manifest, event, trust, created_at, updated_at)"
        " VALUES ($1, 'e', '{}'::jsonb, '{}'::jsonb, 0.5, now(), now() - make_interval(secs => $2))",
        keys["manifest"],
        age,
    )
    await pool.execute(
        "INSERT INTO node_health (pubkey, updated_at) VALUES ($1, now() - make_interval(secs => $2))",
        keys["health"],
        age,
    )
    return keys


async def _present(pool: asyncpg.Pool, keys: dict[str, str]) -> dict[str, bool]:
    checks = {
        "quote": "SELECT 1 FROM quotes WHERE id = $1",
        "chain": "SELECT 1 FROM chains WHERE id = $1",
        "request": "SELECT 1 FROM dispatch_attempts WHERE request_id = $1",
        "manifest": "SELECT 1 FROM node_manifests WHERE pubkey = $1",
        "health": "SELECT 1 FROM node_health WHERE pubkey = $1",
    }
    return {name: await pool.fetchval(query, keys[name]) is not None for name, query in checks.items()}


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url, retention=LONG) as r:
        yield r


async def test_old_rows_go_recent_rows_stay_and_metering_and_nonces_are_never_touched(
    router: RunningRouter, db_pool: asyncpg.Pool
) -> None:
    old = await _aged(db_pool, 40)  # past every default retention (manifests and health: 30 days)
    recent = await _aged(db_pool, 1)
    known = await _aged(db_pool, 40)  # old manifest and health of a node that is still registered
    for pubkey in (known["manifest"], known["health"]):
        await node_store.upsert_heartbeat(db_pool, pubkey, FakeNode(endpoint="http://127.0.0.1:9").descriptor())
    await db_pool.execute(
        "INSERT INTO metering_records (request_id, origin_id, client, node, model, input_tokens, output_tokens,"
        " wall_ms, bytes_in, bytes_out, prompt_sha256, price_msat, event, created_at)"
        " VALUES ('old-record', 'o', 'c', 'n', 'm', 1, 1, 1, 0, 0, 'h', 1, '{}'::jsonb, now() - interval '3 years')"
    )
    await db_pool.execute("INSERT INTO nonces (id, retain_until) VALUES ('old-nonce', now() - interval '3 years')")
    counts = await router.service.housekeeper.run()
    assert await _present(db_pool, old) == dict.fromkeys(old, False)
    assert await _present(db_pool, recent) == dict.fromkeys(recent, True)
    expected = {"quote": False, "chain": False, "request": False, "manifest": True, "health": True}
    assert await _present(db_pool, known) == expected
    assert counts["quotes"] == counts["chains"] == counts["dispatch_attempts"] == 2
    assert counts["node_manifests"] == counts["node_health"] == 1
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records WHERE request_id = 'old-record'") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM nonces WHERE id = 'old-nonce'") == 1
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(router.url + "/metrics", headers=router.admin)).text
    assert 'fedai_router_pruned_rows_total{table="quotes"} 2.0' in metrics
    assert 'fedai_router_pruned_rows_total{table="node_manifests"} 1.0' in metrics


async def test_a_zero_retention_keeps_a_table(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, retention=Retention(interval_s=3600, quotes_s=0)) as r:
        await _quote(db_pool, "kept", 400)
        counts = await r.service.housekeeper.run()
    assert "quotes" not in counts
    assert await db_pool.fetchval("SELECT count(*) FROM quotes WHERE id = 'kept'") == 1


async def test_deletes_are_batched_and_a_backlog_waits_for_the_next_run(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    for i in range(5):
        await _quote(db_pool, f"b{i}", 30)
    rule = store.RULES["quotes"]
    assert await store.prune(db_pool, rule, 7 * DAY, batch=2, max_batches=2) == 4
    assert await db_pool.fetchval("SELECT count(*) FROM quotes") == 1
    assert await store.prune(db_pool, rule, 7 * DAY, batch=2, max_batches=2) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM quotes") == 0


async def test_replicas_pruning_at_once_split_the_rows_without_errors(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    await db_pool.execute(
        "INSERT INTO dispatch_attempts (request_id, node, attempt, outcome, latency_ms, created_at)"
        " SELECT 'r' || g, 'n', 1, 'x', 1.0, now() - interval '30 days' FROM generate_series(1, 300) AS g"
    )
    rule = store.RULES["dispatch_attempts"]
    results = await asyncio.gather(*(store.prune(db_pool, rule, 7 * DAY, batch=7, max_batches=1000) for _ in range(3)))
    assert sum(results) == 300
    assert await db_pool.fetchval("SELECT count(*) FROM dispatch_attempts") == 0


async def test_a_pruner_skips_rows_another_transaction_holds_instead_of_waiting(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    for i in range(4):
        await _quote(db_pool, f"held{i}" if i < 2 else f"free{i}", 30)
    async with db_pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT id FROM quotes WHERE id LIKE 'held%' FOR UPDATE")
        # would wait for the holder's commit without SKIP LOCKED: the holder commits only after this returns
        pruning = store.prune(db_pool, store.RULES["quotes"], 7 * DAY, batch=10, max_batches=10)
        assert await asyncio.wait_for(pruning, 30) == 2
    assert sorted(r["id"] for r in await db_pool.fetch("SELECT id FROM quotes")) == ["held0", "held1"]


async def test_a_stale_node_leaves_postgres_and_memory_and_the_router_keeps_answering(
    router: RunningRouter, db_pool: asyncpg.Pool
) -> None:
    live, stale = FakeNode(model="live-model"), FakeNode(model="stale-model")
    async with serve_app(live.app()) as live_url, serve_app(stale.app()) as stale_url:
        live.endpoint, stale.endpoint = live_url, stale_url
        for node in (live, stale):
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        registry = router.service.registry
        registry.apply_manifest(_key(), 0.7, stored_at=time.time() - 40 * DAY)  # an old manifest of no node
        # the stale node was last heard from two days ago (the default retention is one day)
        await db_pool.execute(
            "UPDATE nodes SET updated_at = now() - interval '2 days', last_heartbeat = now() - interval '2 days'"
            " WHERE pubkey = $1",
            stale.keys.pubkey,
        )
        registry.nodes[stale.keys.pubkey].last_seen -= 2 * DAY
        counts = await router.service.housekeeper.run()
        assert counts[MEMORY] == 1 and counts["nodes"] == 1
        assert set(registry.nodes) == {live.keys.pubkey} and set(registry.tables) == {"live-model"}
        assert len(registry.manifest_trust) == 0
        assert [r["pubkey"] for r in await db_pool.fetch("SELECT pubkey FROM nodes")] == [live.keys.pubkey]
        async with httpx.AsyncClient() as http:
            explained = await http.get(
                router.url + "/route/explain", params={"model": "stale-model"}, headers=router.admin
            )
        assert explained.status_code == 200 and explained.json()["nodes"] == []
        async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            with pytest.raises(FedaiError) as err:
                await client.infer("stale-model", "hi", max_tokens=4)
            assert err.value.code == "unknown_model"
            assert (await client.infer("live-model", "hi", max_tokens=4)).node == live.keys.pubkey
        # the pruned node comes back by heartbeating again: a registration like any other
        assert (await register(router.url, router.pubkey, stale.keys, stale.descriptor())).status_code == 200
        assert "stale-model" in registry.tables


async def test_the_router_runs_the_job_on_its_own(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    await _quote(db_pool, "scheduled", 30)
    async with running_router(database_url, retention=Retention(interval_s=1)) as r:
        metrics = r.service.metrics.registry

        def pruned() -> bool:
            return metrics.get_sample_value("fedai_router_pruned_rows_total", {"table": "quotes"}) == 1

        await eventually(pruned, within=10, what="the scheduled job pruned the quote")
    assert await db_pool.fetchval("SELECT count(*) FROM quotes") == 0


async def test_a_fresh_replica_does_not_load_nodes_past_retention(
    router: RunningRouter, database_url: str, db_pool: asyncpg.Pool
) -> None:
    keys = Keys.generate()
    node = FakeNode(model="old-model", keys=keys)
    node.endpoint = "http://127.0.0.1:9"
    assert (await register(router.url, router.pubkey, keys, node.descriptor())).status_code == 200
    await db_pool.execute(
        "UPDATE nodes SET updated_at = now() - interval '2 days', last_heartbeat = now() - interval '2 days'"
    )
    async with running_router(database_url, keys=router.keys) as replica:  # loads every node at start
        assert keys.pubkey not in replica.service.registry.nodes
        assert "old-model" not in replica.service.registry.tables
