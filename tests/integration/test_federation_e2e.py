"""Federation end to end: three routers, their nodes, one relay. Router A has no node for the model that B and
C serve at different prices; a client's request to A is auctioned, awarded to the cheaper peer, run there, and
answered with a chain the client verifies down to the provider's node and receipt. When the winner fails, the
retry goes to the other. PL3 never leaves A; a PL2 job's prompt is nowhere on the relay nor in B's logs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.nostr import RelayPool
from fedai.nostr.local_relay import start_local_relay
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from tests.support.database import extra_database
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "shared-model"


@dataclass
class Federation:
    relay: str
    a: RunningRouter
    b: RunningRouter
    c: RunningRouter
    b_node: FakeNode
    c_node: FakeNode


async def _serve_node(stack: AsyncExitStack, router: RunningRouter, node: FakeNode) -> None:
    node.endpoint = await stack.enter_async_context(serve_app(node.app()))
    assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200


@pytest.fixture
async def federation(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Federation]:
    relay = await start_local_relay()
    await reset_database(db_pool)
    common = {
        "relays": [relay.url],
        "auction_ttl_ms": 2500,  # ends early once every expected peer has bid; the margin is for loaded CI machines
        "announce_s": 1,
        "reauction_cooldown_ms": 0,
        "fed_job_timeout_ms": 3000,
    }
    async with AsyncExitStack() as stack:
        b_db = await stack.enter_async_context(extra_database(database_url, "fed_b"))
        c_db = await stack.enter_async_context(extra_database(database_url, "fed_c"))
        a = await stack.enter_async_context(running_router(database_url, **common))
        b = await stack.enter_async_context(running_router(b_db, **common))
        c = await stack.enter_async_context(running_router(c_db, **common))
        b_node = FakeNode(model=MODEL, input_msat=1000, output_msat=1000)  # B is the cheaper provider
        c_node = FakeNode(model=MODEL, input_msat=3000, output_msat=3000)
        await _serve_node(stack, b, b_node)
        await _serve_node(stack, c, c_node)
        await eventually(
            lambda: (
                {b.pubkey, c.pubkey}
                <= {p.pubkey for p in a.service.federation.peers.peers_for(MODEL, "text-generation", 2)}
            ),
            within=15,
            what="A learns B and C from the relay",
        )
        yield Federation(relay.url, a, b, c, b_node, c_node)
    relay.shutdown()


async def test_offload_to_the_cheaper_peer_with_a_verifiable_chain(
    federation: Federation, db_pool: asyncpg.Pool
) -> None:
    f = federation
    async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
        chain = await client.infer(MODEL, "hello federation", max_tokens=8)
    assert chain.provider == f.b.pubkey  # the cheaper bid won
    assert chain.node == f.b_node.keys.pubkey and chain.receipt is not None
    assert chain.receipt.requester == f.a.pubkey and chain.output.startswith("fake answer")
    assert f.b_node.calls == 1 and f.c_node.calls == 0
    job = await db_pool.fetchrow("SELECT role, peer, status, receipt FROM federation_jobs")
    assert (job["role"], job["peer"], job["status"]) == ("requester", f.b.pubkey, "done")
    assert (job["receipt"]["kind"], job["receipt"]["pubkey"]) == (21044, f.b.pubkey)  # A keeps B's signed receipt


async def test_fedai_infer_shows_the_provider_router_and_its_receipt(federation: Federation) -> None:
    """What `fedai infer` prints for an offloaded answer: the path through the provider router with every
    signer named, at 80 columns, and `--json` naming the provider and its signed receipt."""
    f = federation
    args = ["infer", "--router", f.a.url, "--router-pubkey", f.a.pubkey, "--key", Keys.generate().nsec, "-m", MODEL]
    runner = CliRunner(env={"COLUMNS": "80"})
    shown = await asyncio.to_thread(runner.invoke, cli, [*args, "hello federation"])
    assert shown.exit_code == 0, shown.output
    assert "client → router → provider router → node" in shown.stdout and "chain verified" in shown.stdout
    assert " ? " not in shown.stdout and all(len(line) <= 80 for line in shown.stdout.splitlines())
    as_json = await asyncio.to_thread(runner.invoke, cli, [*args, "--json", "hello again"])
    document = json.loads(as_json.stdout)
    assert (document["offloaded"], document["provider"]) == (True, f.b.pubkey)
    assert document["receipt"]["signer"] == f.b.pubkey and len(document["receipt"]["event"]) == 64


async def test_the_retry_goes_to_the_other_peer_when_the_winner_fails(federation: Federation) -> None:
    f = federation
    f.b_node.behaviour = "error_500"  # B's only node now fails: B's job fails, A retries
    async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
        chain = await client.infer(MODEL, "second try", max_tokens=8)
    assert chain.provider == f.c.pubkey
    assert f.c_node.calls == 1


async def test_the_retry_goes_to_the_other_peer_when_the_winner_stops_answering_mid_run(
    federation: Federation, db_pool: asyncpg.Pool
) -> None:
    f = federation
    f.b_node.delay_s = 5.0  # B wins, takes the job, then goes silent past A's job timeout (3 s here)
    async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
        chain = await client.infer(MODEL, "B will hang", max_tokens=8)
    assert chain.provider == f.c.pubkey
    assert (f.b_node.calls, f.c_node.calls) == (1, 1)
    jobs = await db_pool.fetch("SELECT peer, status FROM federation_jobs ORDER BY created_at")
    assert [(j["peer"], j["status"]) for j in jobs] == [(f.b.pubkey, "failed"), (f.c.pubkey, "done")]


async def test_pl3_is_never_offloaded(federation: Federation) -> None:
    f = federation
    async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer(MODEL, "stays here", max_tokens=8, privacy=3)
    assert err.value.code == "unknown_model"  # what A says about its own nodes
    assert f.b_node.calls == 0 and f.c_node.calls == 0


async def test_pl2_payload_is_unreadable_on_the_relay_and_in_the_providers_logs(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    f = federation
    secret = f"pl2-secret-{time.time_ns()}"
    seen: list[Event] = []

    async def spy(event: Event, _relay: str) -> None:
        seen.append(event)

    async with RelayPool([f.relay]) as pool:
        assert await pool.wait_connected(5)
        await pool.subscribe([{"kinds": [21020, 21021, 21022, 21023, 31020, 31021, 31022]}], spy)
        caplog.set_level(logging.DEBUG)
        async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
            chain = await client.infer(MODEL, secret, max_tokens=8, privacy=2)
        await asyncio.sleep(0.2)
    assert chain.provider is not None and chain.receipt is not None
    kinds = {e.kind for e in seen}
    assert {21020, 21021, 21022} <= kinds  # the auction did go over the relay
    on_relay = json.dumps([e.to_dict() for e in seen])
    assert secret not in on_relay
    assert secret not in caplog.text  # no router (B included, in-process here) logged it


async def test_spend_cap_keeps_jobs_from_peers(federation: Federation, db_pool: asyncpg.Pool) -> None:
    f = federation
    auctioneer = f.a.service.federation.auctioneer  # the spend cap is the auctioneer's (reserved before the award)
    assert auctioneer is not None
    auctioneer.settings = dataclasses.replace(auctioneer.settings, fed_spend_cap_msat=1)  # nothing fits
    async with AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer(MODEL, "too expensive for the cap", max_tokens=8)
    assert err.value.code == "unknown_model"
    assert (f.b_node.calls, f.c_node.calls) == (0, 0)  # no job ran anywhere
    statuses = {r["status"] for r in await db_pool.fetch("SELECT status FROM federation_jobs")}
    assert statuses <= {"cancelled"}


async def test_two_clients_with_the_same_request_are_both_served(federation: Federation) -> None:
    """Anti-thrash holds back re-auctions of one request, not the same prompt from another client."""
    f = federation
    async with (
        AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as one,
        AsyncClient(f.a.url, router_pubkey=f.a.pubkey) as two,
    ):
        first, second = await asyncio.gather(
            one.infer(MODEL, "same", max_tokens=8), two.infer(MODEL, "same", max_tokens=8)
        )
    assert first.provider == second.provider == f.b.pubkey
