"""Federation under abuse (issue 9, part 5), between real routers on a real relay with scripted peers.

The spend cap holds under concurrent offloads and across replicas sharing a database; an RFB with a far-future
expiration holds the provider's capacity no longer than its cap; a 0 bid from a key without fresh caps or a
valid endpoint never wins; peers and their price sheets are capped; a job.submit naming a random award costs
one lookup, not a polling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import pytest

import fedai_router.store.federation as jobs_store
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Bid, ModelPrice, RouterPrice, Sla, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from fedai_router.federation.bidder import OpenBid
from fedai_router.service import RouterService
from tests.integration.test_federation_binding import SMALL, rfb_for
from tests.support.database import extra_database
from tests.support.federation import MODEL, Duo, Scripted, duo, job_submit, post_job
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def b_database(database_url: str) -> AsyncIterator[str]:
    async with extra_database(database_url, "abuse_b") as dsn:
        yield dsn


@pytest.fixture
async def make_duo(database_url: str, db_pool: asyncpg.Pool, b_database: str) -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**options: Any) -> Duo:
            return await stack.enter_async_context(duo(database_url, db_pool, b_database, **options))

        yield make


def events(svc: RouterService, kind: str, result: str, metric: str = "fedai_router_auction_events_total") -> float:
    return svc.metrics.registry.get_sample_value(metric, {"kind": kind, "result": result}) or 0.0


# -- the spend cap ---------------------------------------------------------------------------------


async def _offload_two(pair: Duo, first: str, second: str) -> list[Any]:
    """Two clients' requests at once, to `first` and `second` (router URLs): each B bid fits the cap alone."""
    clients = [AsyncClient(url, router_pubkey=pair.a.pubkey) for url in (first, second)]
    try:
        return await asyncio.gather(
            *(c.infer(MODEL, f"prompt {i}", max_tokens=8) for i, c in enumerate(clients)), return_exceptions=True
        )
    finally:
        for c in clients:
            await c.aclose()


# B bids 18 msat for one of these jobs (at most 3 input and 8 output tokens at 1000/2000 msat per 1k) and charges
# 9 (what the fake node reports): one job fits the cap, and no second one, whether the first is settled or not
CAP = 20


async def _check_cap(pair: Duo, results: list[Any]) -> None:
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, FedaiError)]
    assert len(served) == 1 and len(refused) == 1, results
    assert refused[0].code == "unknown_model"  # A's own answer: no node of its own, and no peer within the cap
    assert pair.node.calls == 1  # only one job ran anywhere
    pool = pair.a.service.pool
    assert await jobs_store.spent(pool, pair.b.pubkey, 3600) <= CAP
    statuses = Counter(r["status"] for r in await pool.fetch("SELECT status FROM federation_jobs"))
    assert statuses == {"done": 1}  # the refused reservation wrote nothing


async def test_two_concurrent_offloads_cannot_exceed_the_spend_cap(make_duo: Callable[..., Any]) -> None:
    pair: Duo = await make_duo(a_options={"fed_spend_cap_msat": CAP, "auction_ttl_ms": 1_000})
    await _check_cap(pair, await _offload_two(pair, pair.a.url, pair.a.url))
    assert events(pair.a.service, "award", "spend_cap") == 1


async def test_two_replicas_sharing_a_database_cannot_exceed_the_spend_cap(
    make_duo: Callable[..., Any], database_url: str
) -> None:
    options = {"fed_spend_cap_msat": CAP, "auction_ttl_ms": 1_000}
    pair: Duo = await make_duo(a_options=options)
    replica = await pair.router(database_url, keys=pair.a.keys, **options)  # same key, same database
    await _check_cap(pair, await _offload_two(pair, pair.a.url, replica.url))


# -- the provider's capacity -----------------------------------------------------------------------


async def test_a_far_future_rfb_holds_capacity_no_longer_than_the_cap(make_duo: Callable[..., Any]) -> None:
    pair: Duo = await make_duo(b_options={"fed_bid_hold_s": 1, "fed_max_deadline_s": 600})
    requester = await pair.scripted()
    far = int(time.time()) + 3_600
    rfb = await requester.publish(Kind.RFB, rfb_for(SMALL, new_salt()), nonce=True, expiration=far)
    held: list[OpenBid] = []

    def bid_made() -> bool:
        held[:] = [b for b in pair.bidder.open_bids() if b.rfb_id == rfb.id]
        return bool(held)

    await eventually(bid_made, 5, "B bid on the far-future RFB")
    assert held[0].expires_at <= time.time() + 2  # its bid (and the capacity behind it) expires with the cap
    await eventually(lambda: pair.bidder.held(MODEL) == 0, 10, "B's capacity released")

    # a job due tomorrow: an award for it could sit unused that long
    too_long = msgspec.structs.replace(rfb_for(SMALL, new_salt()), deadline_ms=int(time.time() * 1000) + 86_400_000)
    await requester.publish(Kind.RFB, too_long, nonce=True, expiration=int(time.time()) + 30)
    await eventually(lambda: events(pair.b.service, "rfb", "too_long") == 1, 5, "B declined it")
    assert pair.bidder.held(MODEL) == 0


# -- who may win -----------------------------------------------------------------------------------


async def _bid_zero(bidder: Scripted, requester: str) -> None:
    async def answer(event: Event) -> None:
        if event.pubkey == requester:
            bid = Bid(rfb=event.id, price_msat=0, eta_ms=1, capacity_token=secrets.token_hex(16))
            await bidder.publish(
                Kind.BID, bid, to=requester, reply_to=event.id, expiration=int(event.tag("expiration") or 0)
            )

    await bidder.on([int(Kind.RFB)], answer)


async def test_a_zero_bid_without_fresh_caps_or_a_valid_endpoint_never_wins(make_duo: Callable[..., Any]) -> None:
    pair: Duo = await make_duo()
    a = pair.a.service
    nobody, bad_endpoint, other_model = await pair.scripted(), await pair.scripted(), await pair.scripted()
    await bad_endpoint.announce_caps("ftp://203.0.113.7/")
    await other_model.announce_caps("https://203.0.113.8", models=["some-other-model"])
    # the malformed endpoint is refused with the caps themselves (counted), so that peer stays without caps
    await eventually(
        lambda: (
            events(a, "caps", "endpoint", "fedai_router_peer_events_total") == 1
            and a.federation.peers.view(other_model.pubkey) is not None
        ),
        10,
        "A judged their caps",
    )
    assert a.federation.peers.view(bad_endpoint.pubkey) is None
    for peer in (nobody, bad_endpoint, other_model):
        await _bid_zero(peer, pair.a.pubkey)
    everyone = {pair.b.pubkey, nobody.pubkey, bad_endpoint.pubkey, other_model.pubkey}
    awarded = await pair.auctioneer.auction(rfb_for(SMALL, new_salt()), ttl_s=1.5, expect=everyone)
    assert awarded is not None and awarded.peer == pair.b.pubkey and awarded.bid_payload.price_msat > 0
    assert events(a, "bid", "no_caps") == 3
    assert await a.pool.fetchval("SELECT array_agg(peer) FROM federation_jobs") == [pair.b.pubkey]


# -- peer state ------------------------------------------------------------------------------------


def _sheet(job_type: str) -> RouterPrice:
    return RouterPrice(
        job_type=job_type, models=[ModelPrice(model=MODEL, input_msat=1, output_msat=1)], sla=Sla(p95_latency_ms=10.0)
    )


async def test_peers_and_their_price_sheets_are_capped(make_duo: Callable[..., Any]) -> None:
    trusted = Keys.generate()
    pair: Duo = await make_duo(
        a_options={"peer_max": 3, "peer_max_price_sheets": 2, "follow": frozenset({trusted.pubkey})}
    )
    a = pair.a.service
    greedy = await pair.scripted()
    await greedy.announce_caps("https://203.0.113.9")
    for i in range(6):  # six job types, six distinct `d` tags
        await greedy.publish(
            Kind.ROUTER_PRICE,
            _sheet(f"job-{i}"),
            expiration=int(time.time()) + 300,
            extra_tags=[["d", f"job-{i}"], ["t", "fedai"]],
        )
    sheets = "fedai_router_peer_events_total"
    await eventually(
        lambda: events(a, "price", "accepted", sheets) + events(a, "price", "too_many_sheets", sheets) >= 6,
        10,
        "A saw every sheet",
    )
    row = await a.pool.fetchrow("SELECT prices FROM peers WHERE pubkey = $1", greedy.pubkey)
    assert row is not None and len(row["prices"]) == 2
    assert events(a, "price", "too_many_sheets", sheets) >= 4

    strangers = [await pair.scripted() for _ in range(4)]  # B and `greedy` already count: room for one more
    for stranger in strangers:
        await stranger.announce_caps("https://203.0.113.10")
    await eventually(lambda: events(a, "caps", "full", sheets) >= 3, 10, "the book filled up")
    assert len(a.federation.peers.known()) == 3
    followed = await pair.scripted(trusted)  # a trusted newcomer displaces a stranger
    await followed.announce_caps("https://203.0.113.11")
    await eventually(lambda: trusted.pubkey in a.federation.peers.known(), 10, "A admitted the followed key")
    assert len(a.federation.peers.known()) == 3
    assert await a.pool.fetchval("SELECT count(*) FROM peers") <= 3


# -- job.submit for an award we never made ---------------------------------------------------------


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each award id is looked up in the database."""
    counted: Counter[str] = Counter()
    real = jobs_store.find_award

    async def find_award(pool: Any, award_id: str) -> Any:
        counted[award_id] += 1
        return await real(pool, award_id)

    monkeypatch.setattr(jobs_store, "find_award", find_award)
    return counted


async def test_a_random_award_is_answered_after_one_lookup(make_duo: Callable[..., Any], lookups: Counter[str]) -> None:
    pair: Duo = await make_duo()
    b = pair.b
    stranger = Keys.generate()  # a fresh key: no RFB of it was ever bid on
    request = InferenceRequest(model=MODEL, prompt="hi", max_tokens=1)
    submit = job_submit(
        stranger, b.pubkey, request, new_salt(), job_id=secrets.token_hex(16), award=secrets.token_hex(32)
    )
    resp = await post_job(b, submit)
    assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden")
    assert list(lookups.values()) == [1]

    # a requester we hold one open bid for: one of its submits may wait for an award on its way, not three
    requester = await pair.scripted()
    rfb = await requester.publish(Kind.RFB, rfb_for(SMALL, new_salt()), nonce=True, expiration=int(time.time()) + 30)
    await eventually(lambda: any(o.rfb_id == rfb.id for o in pair.bidder.open_bids()), 5, "B bid")
    lookups.clear()
    submits = [
        job_submit(
            requester.keys, b.pubkey, request, new_salt(), job_id=secrets.token_hex(16), award=secrets.token_hex(32)
        )
        for _ in range(3)
    ]
    answers = await asyncio.gather(*(post_job(b, s) for s in submits))
    assert [r.status_code for r in answers] == [403, 403, 403]
    counts = sorted(lookups.values())
    assert counts[:2] == [1, 1] and 1 < counts[2] <= 20, counts
