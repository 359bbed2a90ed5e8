"""The bounded registry against a real router, Postgres and HTTP: over-cap heartbeats refused before anything is
claimed or stored, a flood of fresh keys held under the stated bound while the router keeps serving, registration
rates per source address and per key, concurrent registrations that cannot overshoot, relay announcements under
the same bounds, and a replica that reloads only what its budget holds."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing, encode_payload
from fedai.sdk import AsyncClient
from fedai_router.config import RegistryLimits
from fedai_router.discovery import ANNOUNCE_D_TAG
from fedai_router.service import RouterService
from tests.support.fake_node import FakeNode, register
from tests.support.router import ADMIN, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

ENDPOINT = "http://127.0.0.1:9"
LIMITS = RegistryLimits(
    max_models=4,
    max_aliases=2,
    max_name_chars=48,
    max_names=24,
    max_nodes=12,
    verified_reserve=0.25,
    register_per_address=1000,
    register_per_key=1000,
)


def widest(tag: str, limits: RegistryLimits = LIMITS) -> NodeDescriptor:
    """The largest descriptor the caps allow: every model with every alias, every name at full length."""
    n = limits.max_name_chars

    def name(part: str) -> str:
        return (f"{tag}-{part}-" + "x" * n)[:n]

    pricing = Pricing(input_msat=1, output_msat=1)
    models = []
    for m in range(limits.max_models):
        aliases = [name(f"m{m}a{a}") for a in range(limits.max_aliases)]
        models.append(
            ModelInfo(id=name(f"m{m}"), context_window=4096, max_tokens=512, pricing=pricing, aliases=aliases)
        )
    return NodeDescriptor(endpoint=ENDPOINT, models=models, capacity=Capacity(max_concurrent=1))


def huge(tag: str) -> NodeDescriptor:
    """The seed's 100 KB heartbeat: 256 models with 32 aliases each."""
    return widest(tag, RegistryLimits(max_models=256, max_aliases=32, max_name_chars=12))


def beat(router_pubkey: str, desc: NodeDescriptor, keys: Keys | None = None) -> Event:
    return seal(keys or Keys.generate(), Kind.NODE_HEARTBEAT, desc, to=router_pubkey, nonce=True)


async def _post(url: str, event: Event, client: httpx.AsyncClient | None = None) -> httpx.Response:
    if client is not None:
        return await client.post(url + "/register-node", content=event.to_json())
    async with httpx.AsyncClient() as http:
        return await http.post(url + "/register-node", content=event.to_json())


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(url + "/metrics", headers=ADMIN)).text


def announcement(keys: Keys, desc: NodeDescriptor) -> Event:
    return sign_event(keys, Kind.NODE_ANNOUNCE, encode_payload(desc), [["d", ANNOUNCE_D_TAG]])


def rows_held(svc: RouterService) -> int:
    return sum(len(table) for table in svc.registry.tables.values())


async def test_over_cap_heartbeats_are_refused_before_anything_is_claimed_or_stored(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    limits = RegistryLimits(max_models=4, max_aliases=2, max_descriptor_bytes=8 * 1024)
    async with running_router(database_url, registry_limits=limits) as router:
        cases = [
            (huge("a"), 413, "too_large", "ROUTER_NODE_MAX_DESCRIPTOR_BYTES"),
            (widest("b", RegistryLimits(max_models=5, max_aliases=0)), 400, "invalid_event", "ROUTER_NODE_MAX_MODELS"),
            (widest("c", RegistryLimits(max_models=1, max_aliases=3)), 400, "invalid_event", "ROUTER_NODE_MAX_ALIASES"),
            (
                widest("d", RegistryLimits(max_models=1, max_aliases=0, max_name_chars=129)),
                400,
                "invalid_event",
                "ROUTER_MODEL_NAME_MAX_CHARS",
            ),
        ]
        ids = []
        for desc, status, code, variable in cases:
            event = beat(router.pubkey, desc)
            ids.append(event.id)
            resp = await _post(router.url, event)
            assert resp.status_code == status, resp.text
            assert resp.json()["error"]["code"] == code and variable in resp.json()["error"]["message"]
        assert not router.service.registry.nodes and not router.service.registry.tables
        metrics = await _metrics(router.url)
    assert await db_pool.fetchval("SELECT count(*) FROM nodes") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM nonces WHERE id = ANY($1::text[])", ids) == 0
    assert 'fedai_router_registry_refused_total{reason="models",source="heartbeat"} 1.0' in metrics


async def test_a_flood_of_fresh_keys_stays_under_the_bound_and_the_router_still_serves(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    """Bound: tables <= ROUTER_MAX_MODEL_NAMES (24), nodes <= ROUTER_MAX_NODES (12), scheduler rows <= nodes x
    models x (1 + aliases) = 12 x 4 x 3 = 144. Today's main holds one table per name of every heartbeat: 8,448 for
    a single 256 x 32 descriptor."""
    await reset_database(db_pool)
    node = FakeNode(model="real-model")
    async with serve_app(node.app()) as node_url, running_router(database_url, registry_limits=LIMITS) as router:
        node.endpoint = node_url
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        outcomes: Counter[str] = Counter()
        async with httpx.AsyncClient() as http:
            for i in range(60):  # the seed's 100 KB heartbeat, then in-cap ones: shared names, then new names
                desc = huge(f"h{i}") if i % 3 == 0 else widest("shared") if i % 3 == 1 else widest(f"new{i}")
                resp = await _post(router.url, beat(router.pubkey, desc), http)
                outcomes["ok" if resp.status_code == 200 else resp.json()["error"]["code"]] += 1
                if resp.status_code == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
        svc = router.service
        assert outcomes["too_large"] == 20 and outcomes["ok"] + outcomes["capacity_exceeded"] == 40, outcomes
        assert len(svc.registry.nodes) == LIMITS.max_nodes  # the node budget is what filled up
        assert len(svc.registry.tables) <= LIMITS.max_names
        assert rows_held(svc) <= LIMITS.max_nodes * LIMITS.max_models * (1 + LIMITS.max_aliases)
        assert await db_pool.fetchval("SELECT count(*) FROM nodes") == len(svc.registry.nodes) == 1 + outcomes["ok"]
        async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            chain = await client.infer("real-model", "still there?", max_tokens=4)
    assert chain.node == node.keys.pubkey


async def test_new_registrations_are_limited_per_source_address_and_per_key(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    limits = RegistryLimits(register_per_address=4, register_per_key=2, register_window_s=600)
    async with running_router(database_url, registry_limits=limits) as router:
        beats = [beat(router.pubkey, widest(f"k{i}")) for i in range(5)]
        for event in beats[:4]:
            assert (await _post(router.url, event)).status_code == 200
        resp = await _post(router.url, beats[4])
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        error = resp.json()["error"]
        assert error["code"] == "rate_limited" and "ROUTER_REGISTER_PER_ADDRESS" in error["message"]
        assert beats[4].pubkey not in router.service.registry.nodes
        # another source address has a budget of its own (Linux routes all of 127/8 to loopback)
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport) as other:
            assert (await _post(router.url, beats[4], other)).status_code == 200
            # a known node's heartbeat with the same names is not a registration: the gate never limits it
            keys = Keys.generate()
            for _ in range(5):
                assert (await _post(router.url, beat(router.pubkey, widest("same"), keys), other)).status_code == 200
            # one key changing its names over and over is limited per key (it has used 1 of its 2)
            renamed = beat(router.pubkey, widest("renamed-1"), keys)
            assert (await _post(router.url, renamed, other)).status_code == 200
            refused = beat(router.pubkey, widest("renamed-2"), keys)
            resp = await _post(router.url, refused, other)
        assert resp.status_code == 429 and "ROUTER_REGISTER_PER_KEY" in resp.json()["error"]["message"]
        held = router.service.registry.nodes[keys.pubkey].models
        assert set(held) == {n for m in widest("renamed-1").models for n in (m.id, *m.aliases)}
    assert await db_pool.fetchval("SELECT count(*) FROM nonces WHERE id = $1", refused.id) == 0


async def test_concurrent_registrations_cannot_overshoot_the_budget(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, registry_limits=LIMITS) as router:
        beats = [beat(router.pubkey, widest(f"c{i}")) for i in range(30)]
        async with httpx.AsyncClient() as http:
            answers = await asyncio.gather(*(_post(router.url, b, http) for b in beats))
        accepted = {b.pubkey for b, r in zip(beats, answers, strict=True) if r.status_code == 200}
        refused = [r.json()["error"]["code"] for r in answers if r.status_code != 200]
        assert refused and set(refused) == {"capacity_exceeded"}
        assert len(router.service.registry.tables) <= LIMITS.max_names
        assert set(router.service.registry.nodes) == accepted
    stored = await db_pool.fetch("SELECT pubkey FROM nodes")
    assert {r["pubkey"] for r in stored} == accepted  # a refused registration left no row behind


async def test_relay_announcements_meet_the_same_bounds_and_keep_the_verified_reserve(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    limits = RegistryLimits(max_models=1, max_aliases=1, max_names=8, verified_reserve=0.25, announce_per_relay=3)
    async with running_router(database_url, registry_limits=limits) as router:
        svc = router.service

        async def announce(tag: str, relay: str, desc: NodeDescriptor | None = None) -> bool:
            event = announcement(Keys.generate(), desc or widest(tag, limits))
            return await svc.discovery.handle_announce(event, relay)

        assert not await announce("over", "wss://a", widest("over", RegistryLimits(max_models=2, max_aliases=1)))
        assert not await announce("huge", "wss://a", huge("huge"))  # its size is refused before it is parsed
        # fresh keys on one relay: 3 fill the unverified share of the names (6 of 8), the 4th is refused
        assert [await announce(f"a{i}", "wss://a") for i in range(4)] == [True, True, True, False]
        assert len(svc.registry.tables) == 6
        # names that exist are welcome from another relay; relay a has used its 3 registrations
        assert await announce("a0", "wss://b") and await announce("a0", "wss://b")
        assert not await announce("a1", "wss://a")
        # a heartbeat (verified) may still use the reserve
        assert (await _post(router.url, beat(router.pubkey, widest("direct", limits)))).status_code == 200
        assert len(svc.registry.tables) == 8
        metrics = await _metrics(router.url)
    assert await db_pool.fetchval("SELECT count(*) FROM nodes WHERE source = 'announce'") == 5
    assert 'fedai_router_registry_refused_total{reason="models",source="announce"} 1.0' in metrics
    assert 'fedai_router_registry_refused_total{reason="descriptor_bytes",source="announce"} 1.0' in metrics
    assert 'fedai_router_registry_refused_total{reason="model_names",source="announce"} 1.0' in metrics
    assert 'fedai_router_registry_refused_total{reason="rate_relay",source="announce"} 1.0' in metrics


async def test_a_replica_reloads_only_what_its_budget_holds_verified_first(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    async with running_router(database_url) as big:
        desc = widest("r", RegistryLimits(max_models=1, max_aliases=0))
        verified = Keys.generate()  # the oldest row, loaded first all the same
        assert (await register(big.url, big.pubkey, verified, desc)).status_code == 200
        for _ in range(9):
            assert await big.service.discovery.handle_announce(announcement(Keys.generate(), desc), "wss://r")
    small = RegistryLimits(max_nodes=4, verified_reserve=0.25)  # unverified nodes join while fewer than 3 are held
    async with running_router(database_url, keys=big.keys, registry_limits=small) as replica:
        await eventually(lambda: len(replica.service.registry.nodes) == 3, what="the replica loaded its budget")
        assert verified.pubkey in replica.service.registry.nodes
        metrics = await _metrics(replica.url)
    refused = [line for line in metrics.splitlines() if line.startswith("fedai_router_registry_refused_total{")]
    assert len(refused) == 1 and 'reason="nodes",source="refresh"' in refused[0]
    assert float(refused[0].split()[-1]) >= 7  # the 7 unverified nodes beyond the budget (re-read while recent)
