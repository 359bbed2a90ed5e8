"""Offloaded requests under what the client agreed: a provider whose node bills more than the bid is refused by
the requester (its chain carries the node's own price), and max_price_msat = 0 caps the auction at zero."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import pytest

from fedai.nostr.local_relay import start_local_relay
from fedai.protocol.errors import FedaiError
from fedai.sdk import AsyncClient
from tests.support.database import extra_database
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "offloaded-model"


@dataclass
class Pair:
    a: RunningRouter  # the requester: no node for MODEL
    b: RunningRouter  # the provider
    node: FakeNode  # B's node


@pytest.fixture
async def pair(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Pair]:
    relay = await start_local_relay()
    await reset_database(db_pool)
    common = {
        "relays": [relay.url],
        "auction_ttl_ms": 2500,  # ends early once every expected peer has bid; the margin is for loaded CI machines
        "announce_s": 1,
        "reauction_cooldown_ms": 0,
        "fed_job_timeout_ms": 3000,
        "fed_max_attempts": 1,
    }
    async with AsyncExitStack() as stack:
        b_db = await stack.enter_async_context(extra_database(database_url, "fed_metering_b"))
        a = await stack.enter_async_context(running_router(database_url, **common))
        b = await stack.enter_async_context(running_router(b_db, **common))
        node = FakeNode(model=MODEL, input_msat=1000, output_msat=1000)
        node.endpoint = await stack.enter_async_context(serve_app(node.app()))
        assert (await register(b.url, b.pubkey, node.keys, node.descriptor())).status_code == 200
        await eventually(
            lambda: b.pubkey in {p.pubkey for p in a.service.federation.peers.peers_for(MODEL, "text-generation", 2)},
            within=15,
            what="A learns B from the relay",
        )
        yield Pair(a, b, node)
    relay.shutdown()


async def test_an_honest_offload_is_served(pair: Pair) -> None:
    async with AsyncClient(pair.a.url, router_pubkey=pair.a.pubkey) as client:
        chain = await client.infer(MODEL, "hello", max_tokens=8)
    assert chain.provider == pair.b.pubkey and chain.record.price_msat == 6


async def test_a_provider_node_billing_above_the_bid_is_refused(pair: Pair, db_pool: asyncpg.Pool) -> None:
    # B's node claims 500 input tokens for "hello" (within what B's own checks allow: B got no price cap) and
    # bills them at its advertised rate: 503 msat, far above B's bid for a 2-token prompt
    pair.node.report_tokens = (500, 3)
    async with AsyncClient(pair.a.url, router_pubkey=pair.a.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer(MODEL, "hello", max_tokens=8)
    assert err.value.code == "upstream_error" and "price above what the client agreed" in err.value.message
    assert pair.node.calls == 1
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0  # A stored nothing
    assert await db_pool.fetchval("SELECT status FROM federation_jobs WHERE role = 'requester'") == "failed"


async def test_max_price_msat_zero_offers_zero(pair: Pair) -> None:
    async with AsyncClient(pair.a.url, router_pubkey=pair.a.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer(MODEL, "hello", max_tokens=8, max_price_msat=0)
    assert err.value.code == "unknown_model"  # no peer bids 0 msat: A's own answer stands
    assert pair.node.calls == 0
