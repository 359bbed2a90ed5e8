"""Router /register-node, /quote and the operator endpoints."""

from __future__ import annotations

import time

import asyncpg
import httpx
import msgspec
import pytest

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import compute_id
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai.sdk import AsyncClient
from tests.integration.conftest import SpawnNode
from tests.support.fake_node import register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.wait import eventually


def _descriptor(endpoint: str, model: str = "m1") -> NodeDescriptor:
    return NodeDescriptor(
        endpoint=endpoint,
        models=[
            ModelInfo(id=model, context_window=2048, max_tokens=512, pricing=Pricing(input_msat=1000, output_msat=3000))
        ],
        capacity=Capacity(max_concurrent=2),
    )


async def _node_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT pubkey, endpoint, verified, source FROM nodes ORDER BY pubkey"))


async def test_heartbeat_registers_the_signer_and_is_acknowledged(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    keys = Keys.generate()
    beat = seal(keys, Kind.NODE_HEARTBEAT, _descriptor("http://127.0.0.1:9"), to=router.pubkey, nonce=True)
    async with httpx.AsyncClient() as http:
        resp = await http.post(router.url + "/register-node", content=beat.to_json())
    assert resp.status_code == 200
    ack = open_envelope(
        resp.content, Ack, kinds=(Kind.ACK,), recipient=keys.pubkey, signers=(router.pubkey,), reply_to=beat.id
    )
    assert ack.payload.status == "ok"
    rows = await _node_rows(db_pool)
    assert [(r["pubkey"], r["endpoint"], r["verified"], r["source"]) for r in rows] == [
        (keys.pubkey, "http://127.0.0.1:9", True, "heartbeat")
    ]


async def test_heartbeat_cannot_claim_another_nodes_key(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    victim, attacker = Keys.generate(), Keys.generate()
    assert (await register(router.url, router.pubkey, victim, _descriptor("http://127.0.0.1:1001"))).status_code == 200
    before = await _node_rows(db_pool)
    hijack = seal(attacker, Kind.NODE_HEARTBEAT, _descriptor("http://127.0.0.1:6666"), to=router.pubkey, nonce=True)
    async with httpx.AsyncClient() as http:
        # 1. put the victim's key on an event signed by the attacker: the id no longer matches
        as_victim = msgspec.structs.replace(hijack, pubkey=victim.pubkey)
        resp = await http.post(router.url + "/register-node", content=as_victim.to_json())
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_event"
        # 2. recompute the id too: now the attacker's signature does not verify for the victim's key
        digest = compute_id(victim.pubkey, hijack.created_at, hijack.kind, hijack.tags, hijack.content)
        as_victim = msgspec.structs.replace(as_victim, id=digest.hex())
        resp = await http.post(router.url + "/register-node", content=as_victim.to_json())
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_signature"
    assert await _node_rows(db_pool) == before


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8090",
        "http://[::1]:8090",
        "http://0.0.0.0:8090",
        "http://10.1.2.3",
        "http://192.168.1.10:80",
        "http://169.254.169.254/latest",
        "http://[::ffff:127.0.0.1]:80",
        "http://[fe80::1]:80",
        "http://2130706433:80",  # decimal form of 127.0.0.1
        "http://localhost:8090",  # a DNS name that resolves to a private address
        "http://100.64.0.1",  # carrier-grade NAT
    ],
)
async def test_private_endpoints_refused_by_default(database_url: str, db_pool: asyncpg.Pool, endpoint: str) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, allow_private_endpoints=False) as router:
        resp = await register(router.url, router.pubkey, Keys.generate(), _descriptor(endpoint))
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "forbidden"
        assert "ROUTER_ALLOW_PRIVATE_ENDPOINTS" in resp.json()["error"]["message"]
    assert await _node_rows(db_pool) == []


@pytest.mark.parametrize(
    ("endpoint", "status", "code"),
    [
        ("ftp://example.com/", 400, "invalid_request"),
        ("http://user:pw@93.184.216.34/", 400, "invalid_request"),
        ("http://93.184.216.34/?x=1", 400, "invalid_request"),
        ("http://name.invalid/", 400, "invalid_request"),  # RFC 6761: never resolves
        ("http://93.184.216.34:8090", 200, None),  # a public address is accepted
    ],
)
async def test_endpoint_shapes(database_url: str, db_pool: asyncpg.Pool, endpoint: str, status: int, code: str) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, allow_private_endpoints=False) as router:
        resp = await register(router.url, router.pubkey, Keys.generate(), _descriptor(endpoint))
        assert resp.status_code == status, resp.text
        if code:
            assert resp.json()["error"]["code"] == code
    assert len(await _node_rows(db_pool)) == (1 if status == 200 else 0)


async def test_replayed_heartbeat_is_refused(router: RunningRouter) -> None:
    keys = Keys.generate()
    beat = seal(keys, Kind.NODE_HEARTBEAT, _descriptor("http://127.0.0.1:9"), to=router.pubkey, nonce=True)
    async with httpx.AsyncClient() as http:
        assert (await http.post(router.url + "/register-node", content=beat.to_json())).status_code == 200
        again = await http.post(router.url + "/register-node", content=beat.to_json())
    assert again.status_code == 409 and again.json()["error"]["code"] == "replay"


async def test_quote_is_signed_stored_and_honoured(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node(input_msat=2000, output_msat=4000)
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        quote = await client.quote("fake-model", max_tokens=100, prompt="x" * 400)
        q = quote.quote
        assert (q.input_tokens, q.max_output_tokens) == (100, 100)
        assert (q.price.input_msat, q.price.output_msat) == (200, 400)
        assert q.price.total_msat == 600 + q.price.router_fee_msat
        assert q.expires_at > time.time()
        assert quote.event.tag("expiration") == str(q.expires_at)
        row = await db_pool.fetchrow("SELECT client, total_msat FROM quotes WHERE id = $1", q.quote_id)
        assert row is not None and (row["client"], row["total_msat"]) == (client.keys.pubkey, q.price.total_msat)
        chain = await client.infer("fake-model", "x" * 400, max_tokens=100, quote_id=q.quote_id)
        assert chain.record.price_msat <= q.price.total_msat
        with pytest.raises(FedaiError) as err:
            await client.infer("other-model", "x", max_tokens=10, quote_id=q.quote_id)
        assert err.value.code == "quote_invalid"
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as stranger:
        with pytest.raises(FedaiError) as err:
            await stranger.infer("fake-model", "x", max_tokens=10, quote_id=q.quote_id)
        assert err.value.code == "quote_invalid"


async def test_expired_quote_is_refused(router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool) -> None:
    await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=10, input_tokens=5)).quote
        await db_pool.execute("UPDATE quotes SET expires_at = now() - interval '1 second' WHERE id = $1", q.quote_id)
        with pytest.raises(FedaiError) as err:
            await client.infer("fake-model", "x", max_tokens=10, quote_id=q.quote_id)
    assert err.value.code == "quote_invalid" and "expired" in err.value.message


async def test_quote_for_unknown_model(router: RunningRouter) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.quote("nope", max_tokens=10, input_tokens=5)
    assert err.value.code == "unknown_model" and err.value.status == 404


async def test_quote_response_verifies_against_router_key(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    async with AsyncClient(router.url, router_pubkey=Keys.generate().pubkey) as impostor_pinned:
        with pytest.raises(FedaiError) as err:
            await impostor_pinned.quote("fake-model", max_tokens=10, input_tokens=5)
    # the router refuses an envelope addressed to another key
    assert err.value.code == "wrong_recipient"


async def test_ops_endpoints(router: RunningRouter, spawn_node: SpawnNode) -> None:
    node = await spawn_node()
    async with httpx.AsyncClient() as http:
        health = (await http.get(router.url + "/health")).json()
        assert health["pubkey"] == router.pubkey and health["npub"].startswith("npub1")
        ready = await http.get(router.url + "/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["database"] is True
        status = (await http.get(router.url + "/status", headers=router.admin)).json()
        assert [n["pubkey"] for n in status["nodes"]] == [node.keys.pubkey]
        assert status["nodes"][0]["fresh"] is True and status["nodes"][0]["models"] == ["fake-model"]
        metrics = (await http.get(router.url + "/metrics", headers=router.admin)).text
    assert 'fedai_router_nodes{state="fresh"} 1.0' in metrics
    assert 'fedai_router_requests_total{code="ok",route="register"}' in metrics


async def test_second_replica_sees_heartbeats_through_the_database(router: RunningRouter, database_url: str) -> None:
    async with running_router(database_url, keys=router.keys) as replica:
        keys = Keys.generate()
        assert (await register(router.url, router.pubkey, keys, _descriptor("http://127.0.0.1:9"))).status_code == 200
        await eventually(lambda: keys.pubkey in replica.service.registry.nodes, what="replica loads the node")


async def test_a_background_loop_survives_an_unexpected_failure(database_url: str, db_pool: asyncpg.Pool) -> None:
    """One bad run (here a bug-like ValueError in the registry refresh) is logged; the loop keeps running."""
    await reset_database(db_pool)
    async with running_router(database_url, registry_refresh_ms=50) as router:
        registry = router.service.registry
        real, runs = registry.refresh, []

        async def flaky() -> int:
            runs.append(time.monotonic())
            if len(runs) == 1:
                raise ValueError("a row that does not parse")
            return await real()

        registry.refresh = flaky  # type: ignore[method-assign]
        await eventually(lambda: len(runs) >= 3, 5, "the refresh loop ran again after the failure")
