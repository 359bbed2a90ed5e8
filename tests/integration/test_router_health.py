"""Health and failover through real HTTP and Postgres: cooldowns shared by replicas, quarantine, attempts
recorded, Retry-After honoured, flapping nodes, the retry budget, pins, and single-use quotes."""

from __future__ import annotations

import time

import asyncpg
import httpx
import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from fedai_router.retry import RetryBudget
from tests.integration.conftest import SpawnNode
from tests.support.router import ADMIN_TOKEN, RunningRouter, running_router
from tests.support.wait import eventually


async def _infer(router: RunningRouter, **options: object) -> object:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        return await client.infer("fake-model", "hello", max_tokens=8, **options)  # type: ignore[arg-type]


async def test_failed_attempts_are_recorded_and_the_winner_notes_its_attempt(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    bad = await spawn_node(behaviour="error_500", input_msat=1, output_msat=1)
    good = await spawn_node()
    chain = await _infer(router)
    rows = await db_pool.fetch("SELECT request_id, node, attempt, outcome FROM dispatch_attempts")
    assert [(r["request_id"], r["node"], r["attempt"], r["outcome"]) for r in rows] == [
        (chain.request.id, bad.keys.pubkey, 1, "internal")  # type: ignore[attr-defined]
    ]
    metering = await db_pool.fetchrow("SELECT node, attempt FROM metering_records")
    assert (metering["node"], metering["attempt"]) == (good.keys.pubkey, 2)


async def test_cooldown_and_quarantine_are_shared_with_other_replicas(
    router: RunningRouter, spawn_node: SpawnNode, database_url: str, db_pool: asyncpg.Pool
) -> None:
    liar = await spawn_node(behaviour="bad_signature", input_msat=1, output_msat=1)
    await spawn_node()
    await _infer(router)
    row = await db_pool.fetchrow("SELECT consecutive_failures, quarantined_until, last_failure FROM node_health")
    assert row["consecutive_failures"] == 1 and row["last_failure"] == "upstream_error"
    assert row["quarantined_until"].timestamp() > time.time() + 30  # a protocol breach quarantines
    async with running_router(database_url, keys=router.keys) as replica:
        await eventually(
            lambda: (
                liar.keys.pubkey in replica.service.registry.nodes
                and replica.service.registry.nodes[liar.keys.pubkey].cooldown_until > time.time()
            ),
            what="replica learns the quarantine",
        )
        await _infer(replica)
    assert liar.calls == 1  # the replica never called the quarantined node


async def test_node_retry_after_is_honoured(router: RunningRouter, spawn_node: SpawnNode) -> None:
    busy = await spawn_node(behaviour="busy", input_msat=1, output_msat=1)  # 429 with retry_after_ms=2000
    await spawn_node()
    await _infer(router)
    state = router.service.registry.nodes[busy.keys.pubkey]
    assert state.cooldown_until - time.time() > 1.5
    await _infer(router)
    assert busy.calls == 1


async def test_a_flapping_node_loses_share_to_a_steady_one(router: RunningRouter, spawn_node: SpawnNode) -> None:
    flappy = await spawn_node(input_msat=1000, output_msat=1800)  # slightly cheaper: preferred while healthy
    steady = await spawn_node()
    async with httpx.AsyncClient() as http:
        before = (
            await http.get(
                router.url + "/route/explain", params={"model": "fake-model", "max_tokens": 8}, headers=router.admin
            )
        ).json()
    assert before["nodes"][0]["node"] == flappy.keys.pubkey  # healthy, it would win on price
    registry = router.service.registry
    state = registry.nodes[flappy.keys.pubkey]
    for _ in range(25):  # a long record of failures, each cooldown long past
        registry.index.failed(state, "upstream_error", now=time.time() - 120)
    registry.index.succeeded(state, 5.0)  # it is up again right now
    for _ in range(6):
        await _infer(router)
    assert state.health.reliability < 0.6
    assert steady.calls == 6 and flappy.calls == 0


async def test_retry_budget_stops_failover_storms(database_url: str, db_pool: asyncpg.Pool) -> None:
    from contextlib import AsyncExitStack

    from tests.support.fake_node import FakeNode, register
    from tests.support.router import reset_database
    from tests.support.servers import serve_app

    await reset_database(db_pool)
    async with running_router(database_url, node_timeout_ms=1500) as router, AsyncExitStack() as stack:
        router.service.dispatcher.budget = RetryBudget(ratio=0.0, min_per_s=0.0, burst=0.0)  # no failover at all
        nodes = []
        for price in (1000, 2000, 3000):
            node = FakeNode(behaviour="error_500", input_msat=price, output_msat=price)
            node.endpoint = await stack.enter_async_context(serve_app(node.app()))
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            nodes.append(node)
        with pytest.raises(FedaiError) as err:
            await _infer(router)
        assert err.value.code == "upstream_error"
        assert [n.calls for n in nodes] == [1, 0, 0]
        metrics = (await httpx.AsyncClient().get(router.url + "/metrics", headers=router.admin)).text
        assert 'fedai_router_failovers_total{reason="budget_exhausted"} 1.0' in metrics


async def test_pinned_and_excluded_nodes(router: RunningRouter, spawn_node: SpawnNode) -> None:
    cheap = await spawn_node(input_msat=1, output_msat=1)
    dear = await spawn_node()
    assert (await _infer(router, nodes=[dear.keys.pubkey])).node == dear.keys.pubkey  # type: ignore[attr-defined]
    assert (await _infer(router, exclude_nodes=[cheap.keys.pubkey])).node == dear.keys.pubkey  # type: ignore[attr-defined]
    with pytest.raises(FedaiError) as err:
        await _infer(router, nodes=[cheap.keys.pubkey], exclude_nodes=[cheap.keys.pubkey])
    assert (err.value.status, err.value.code) == (400, "invalid_request")
    with pytest.raises(FedaiError) as err:
        await _infer(router, nodes=[Keys.generate().pubkey])
    assert (err.value.status, err.value.code) == (400, "invalid_request")


async def test_pinned_node_that_is_down(router: RunningRouter, spawn_node: SpawnNode) -> None:
    down = await spawn_node(behaviour="error_500")
    await spawn_node()
    with pytest.raises(FedaiError):
        await _infer(router, nodes=[down.keys.pubkey])  # the attempt fails, the node cools down
    with pytest.raises(FedaiError) as err:
        await _infer(router, nodes=[down.keys.pubkey])
    assert (err.value.status, err.value.code) == (503, "no_capacity")
    assert "cooldown=1" in err.value.message and "pinned_out=1" in err.value.message


async def test_quotes_are_single_use_and_bound_to_the_priced_prompt(
    router: RunningRouter, spawn_node: SpawnNode
) -> None:
    await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=10, prompt="short")).quote
        with pytest.raises(FedaiError) as err:
            await client.infer(
                "fake-model", "a much longer prompt than the one priced", max_tokens=10, quote_id=q.quote_id
            )
        assert (err.value.code, "longer") == ("quote_invalid", "longer" if "longer" in err.value.message else "")
        q = (await client.quote("fake-model", max_tokens=10, prompt="short")).quote
        assert (await client.infer("fake-model", "short", max_tokens=10, quote_id=q.quote_id)).output
        with pytest.raises(FedaiError) as err:
            await client.infer("fake-model", "short", max_tokens=10, quote_id=q.quote_id)
        assert err.value.code == "quote_invalid"
        assert "already been used" in err.value.message


async def test_route_explain_endpoint(router: RunningRouter, spawn_node: SpawnNode) -> None:
    a = await spawn_node(input_msat=1, output_msat=1)
    b = await spawn_node(capacity=1, behaviour="slow", delay_s=0.0)
    router.service.registry.index.failed(router.service.registry.nodes[b.keys.pubkey], "upstream_error")
    async with httpx.AsyncClient() as http:
        resp = await http.get(
            router.url + "/route/explain", params={"model": "fake-model", "max_tokens": 16}, headers=router.admin
        )
        bad = await http.get(
            router.url + "/route/explain", params={"model": "fake-model", "max_tokens": "x"}, headers=router.admin
        )
        missing = await http.get(router.url + "/route/explain", headers=router.admin)
    body = resp.json()
    assert body["eligible"] == 1
    assert [(n["node"], n["verdict"]) for n in body["nodes"]] == [(a.keys.pubkey, "ok"), (b.keys.pubkey, "cooldown")]
    assert set(body["nodes"][0]["parts"]) == {"price", "load", "latency", "reliability", "trust", "unverified"}
    assert body["policy"]["weights"]["reliability"] == 2.0
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "invalid_request")


async def test_fedai_route_explain_command(router: RunningRouter, spawn_node: SpawnNode) -> None:
    import asyncio
    import json

    from click.testing import CliRunner

    from fedai.cli.main import cli

    node = await spawn_node()
    runner = CliRunner()
    args = ["route", "explain", "--router", router.url, "--admin-token", ADMIN_TOKEN, "--model", "fake-model"]
    as_json = await asyncio.to_thread(runner.invoke, cli, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["nodes"][0]["node"] == node.keys.pubkey
    table = await asyncio.to_thread(runner.invoke, cli, args)
    assert table.exit_code == 0 and "1 eligible of 1" in table.output and "verdict" in table.output
    wide = await asyncio.to_thread(runner.invoke, cli, [*args, "--wide"])
    assert wide.exit_code == 0 and "reliability" in wide.output
    unknown = await asyncio.to_thread(runner.invoke, cli, [*args[:-1], "nope", "--json"])
    assert json.loads(unknown.output)["nodes"] == []


async def test_quote_from_another_router_sharing_the_database_is_refused(
    router: RunningRouter, spawn_node: SpawnNode, database_url: str
) -> None:
    await spawn_node()
    client_keys = Keys.generate()
    async with AsyncClient(router.url, client_keys, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=10, prompt="short")).quote
    async with running_router(database_url) as other:  # another router identity on the same database
        await eventually(lambda: len(other.service.registry.nodes) == 1, what="other router sees the node")
        async with AsyncClient(other.url, client_keys, router_pubkey=other.pubkey) as client:
            with pytest.raises(FedaiError) as err:
                await client.infer("fake-model", "short", max_tokens=10, quote_id=q.quote_id)
    assert (err.value.code, err.value.message) == ("quote_invalid", "quote was issued by another router")


async def test_price_cap_below_every_node_is_503_naming_price(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    with pytest.raises(FedaiError) as err:
        await _infer(router, max_price_msat=1)
    assert (err.value.status, err.value.code) == (503, "no_capacity")
    assert "price=1" in err.value.message
