"""Peer routers' endpoints (from their signed caps) are judged like node endpoints: a caps event whose endpoint
is malformed, names a private address or resolves to one is refused when it arrives, and a name that turns
private after the peer was learned (DNS rebinding) is refused when the router connects to send it a job.
Real relay, real routers, real HTTP on loopback; DNS answers scripted through the resolver's lookup only."""

from __future__ import annotations

from contextlib import AsyncExitStack

import asyncpg
import pytest

from fedai.nostr import RelayPool
from fedai.nostr.local_relay import start_local_relay
from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import RouterCaps, RouterLimits
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.sdk import AsyncClient
from tests.support.database import extra_database
from tests.support.dns import FakeDNS
from tests.support.fake_node import FakeNode, register
from tests.support.router import reset_database, running_router
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

TG = "text-generation"
PUBLIC = "93.184.216.34"


def caps_event(keys: Keys, endpoint: str, model: str) -> Event:
    caps = RouterCaps(
        endpoint=endpoint,
        job_types=[TG],
        models=[model],
        limits=RouterLimits(max_tokens=1024, max_request_bytes=65536),
        max_privacy=2,
    )
    return seal(keys, Kind.ROUTER_CAPS, caps, extra_tags=[["d", "caps"]])


async def test_caps_with_a_private_or_malformed_endpoint_are_refused(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    dns = FakeDNS({"good.test": PUBLIC, "inside.test": "10.0.0.7"})
    bad_endpoints = [
        "http://127.0.0.1:9",
        "http://[::ffff:10.0.0.1]:80",
        "http://169.254.169.254/latest",
        "ftp://peer.example",
        "http://user:pw@good.test",
        "http://inside.test:8080",  # a name that resolves to a private address
    ]
    bad = [Keys.generate() for _ in bad_endpoints]
    good = Keys.generate()
    await reset_database(db_pool)
    async with running_router(database_url, relays=[own_relay_url], allow_private_endpoints=False) as router:
        router.service.resolver.lookup = dns
        book = router.service.federation.peers
        async with RelayPool([own_relay_url]) as pool:
            assert await pool.wait_connected(5)
            for keys, endpoint in zip(bad, bad_endpoints, strict=True):
                assert all(r.ok for r in await pool.publish(caps_event(keys, endpoint, "ssrf-m")))
            assert all(r.ok for r in await pool.publish(caps_event(good, "http://good.test:8080", "ssrf-m")))
        await eventually(
            lambda: [v.pubkey for v in book.peers_for("ssrf-m", TG, 0)] == [good.pubkey],
            what="the good peer is learned",
        )
        assert book.known() == [good.pubkey]  # none of the others, not even unusable
        assert book.events.labels("caps", "endpoint")._value.get() == len(bad_endpoints)
        assert "inside.test" in dns.lookups  # the name was resolved (bounded resolver), not just parsed
    assert await db_pool.fetchval("SELECT array_agg(pubkey) FROM peers") == [good.pubkey]


async def test_a_peer_name_rebound_to_loopback_gets_no_job(database_url: str, db_pool: asyncpg.Pool) -> None:
    """A learns B at a public address; by the time A sends B the job, B's name answers 127.0.0.1."""
    relay = await start_local_relay()
    await reset_database(db_pool)
    model = "rebound-model"
    common: dict[str, object] = {
        "relays": [relay.url],
        "auction_ttl_ms": 2500,  # ends early once every expected peer has bid; the margin is for loaded CI machines
        "announce_s": 1,
        "reauction_cooldown_ms": 0,
        "fed_job_timeout_ms": 3000,
    }
    dns = FakeDNS({"peer-b.test": PUBLIC})
    b_port = free_port()
    try:
        async with AsyncExitStack() as stack:
            b_db = await stack.enter_async_context(extra_database(database_url, "ssrf_b"))
            a = await stack.enter_async_context(running_router(database_url, allow_private_endpoints=False, **common))
            a.service.resolver.lookup = dns
            b = await stack.enter_async_context(
                running_router(b_db, port=b_port, public_url=f"http://peer-b.test:{b_port}", **common)
            )
            node = FakeNode(model=model)
            node.endpoint = await stack.enter_async_context(serve_app(node.app()))
            assert (await register(b.url, b.pubkey, node.keys, node.descriptor())).status_code == 200
            await eventually(
                lambda: b.pubkey in {p.pubkey for p in a.service.federation.peers.peers_for(model, TG, 2)},
                within=15,
                what="A learns B (its name judged public)",
            )
            dns.answers["peer-b.test"] = "127.0.0.1"
            async with AsyncClient(a.url, router_pubkey=a.pubkey) as client:
                with pytest.raises(FedaiError) as err:
                    await client.infer(model, "for B", max_tokens=8)
            failures = a.service.metrics.registry.get_sample_value(
                "fedai_router_outbound_failures_total", {"target": "peer", "reason": "address_refused"}
            )
            assert failures == 1  # A won B's bid and then refused to connect to where B's name now points
            assert node.calls == 0
            for detail in ("127.0.0.1", "peer-b", str(b_port)):
                assert detail not in err.value.message
    finally:
        relay.shutdown()
