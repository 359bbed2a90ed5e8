"""Routers learn nodes from signed node.announce events on a real relay; such nodes start unverified."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from fedai.nostr import RelayPool
from fedai.protocol.event import sign_event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import encode_payload
from fedai.sdk import AsyncClient
from tests.support.fake_node import FakeNode
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually


async def _announce(relay_url: str, node: FakeNode) -> None:
    event = sign_event(
        node.keys,
        Kind.NODE_ANNOUNCE,
        encode_payload(node.descriptor()),
        [["d", "fedai-node"], ["t", "fedai"], ["model", node.model]],
    )
    async with RelayPool([relay_url]) as pool:
        assert await pool.wait_connected(5)
        results = await pool.publish(event)
    assert all(r.ok for r in results), results


@pytest.fixture
async def relay_router(database_url: str, db_pool: asyncpg.Pool, relay_url: str) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url, relays=[relay_url]) as router:
        assert await router.service.relays.wait_connected(5)
        yield router


async def test_announced_node_is_discovered_unverified_then_verified_by_a_call(
    relay_router: RunningRouter, relay_url: str, db_pool: asyncpg.Pool
) -> None:
    node = FakeNode(model="announced-model")
    async with serve_app(node.app()) as url:
        node.endpoint = url
        await _announce(relay_url, node)
        registry = relay_router.service.registry
        await eventually(lambda: node.keys.pubkey in registry.nodes)
        assert registry.nodes[node.keys.pubkey].verified is False
        row = await db_pool.fetchrow("SELECT verified, source FROM nodes WHERE pubkey = $1", node.keys.pubkey)
        assert (row["verified"], row["source"]) == (False, "announce")
        async with AsyncClient(relay_router.url, router_pubkey=relay_router.pubkey) as client:
            chain = await client.infer("announced-model", "hi", max_tokens=4)
        assert chain.node == node.keys.pubkey
        assert await db_pool.fetchval("SELECT verified FROM nodes WHERE pubkey = $1", node.keys.pubkey) is True
    ready = relay_router.service.relays.status()
    assert ready == {relay_url: True}


async def test_announced_private_endpoint_is_ignored_without_the_flag(
    database_url: str, db_pool: asyncpg.Pool, relay_url: str
) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, relays=[relay_url], allow_private_endpoints=False) as router:
        assert await router.service.relays.wait_connected(5)
        node = FakeNode(model="private-model")
        node.endpoint = "http://127.0.0.1:9"
        await _announce(relay_url, node)
        # a public node announced afterwards: once it is in, the private one has been handled (in order)
        marker = FakeNode(model="public-model")
        marker.endpoint = "http://93.184.216.34:8090"
        await _announce(relay_url, marker)
        await eventually(lambda: marker.keys.pubkey in router.service.registry.nodes)
        assert node.keys.pubkey not in router.service.registry.nodes
    assert await db_pool.fetchval("SELECT array_agg(pubkey) FROM nodes") == [marker.keys.pubkey]
