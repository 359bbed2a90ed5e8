# Long but one concept: one auction (RFB, bids, award, job) end to end between two routers on a real relay.
"""Auctions between real routers on a real relay: requester A has no node for the model, provider B has one.

Each router has its own database (as two operators would), so both `federation_jobs` rows can be checked.
Scripted peers (a bare relay pool with their own keys) play the misbehaving bidders and requesters.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from fedai.nostr import RelayPool, start_local_relay
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import Award, Bid, Cancel, Rfb
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import decode_payload
from fedai.protocol.nip98 import auth_header
from fedai_router.federation.auction import Auctioneer
from fedai_router.federation.bidder import Bidder, OpenBid
from fedai_router.service import RouterService
from fedai_router.store.federation import find_award, get_job, set_job_status, start_job
from tests.support.database import extra_database
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

MODEL = "auction-model"
FEE = 7
PRICE = 10 + 40 + FEE  # 10 input tokens at 1000 msat/1k, 20 output tokens at 2000 msat/1k, plus B's base fee


@pytest.fixture(scope="module")
async def second_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own for the provider router, on the same server."""
    async with extra_database(database_url, "auction_b") as dsn:
        yield dsn


@dataclass
class Pair:
    a: RunningRouter  # requester: no node
    b: RunningRouter  # provider: one node for MODEL
    node: FakeNode
    relay_url: str

    @property
    def auctioneer(self) -> Auctioneer:
        assert self.a.service.federation.auctioneer is not None
        return self.a.service.federation.auctioneer

    @property
    def bidder(self) -> Bidder:
        assert self.b.service.federation.bidder is not None
        return self.b.service.federation.bidder


async def ready(router: RunningRouter) -> None:
    svc = router.service
    assert svc.relays is not None and await svc.relays.wait_connected(5)
    assert svc.federation.auctioneer is not None and await svc.federation.auctioneer.ready()
    assert svc.federation.bidder is not None and await svc.federation.bidder.ready()


@pytest.fixture
async def pair_factory(
    database_url: str, second_database: str, db_pool: asyncpg.Pool
) -> AsyncIterator[Callable[..., Any]]:
    """Two routers on a relay of their own: routers of earlier tests stay announced on a shared relay until
    their announcements expire, and would be expected to bid."""
    relay = await start_local_relay()
    relay_url = relay.url
    async with AsyncExitStack() as stack:
        stack.callback(relay.shutdown)

        async def make(a_options: dict[str, Any] | None = None, b_options: dict[str, Any] | None = None) -> Pair:
            await reset_database(db_pool)
            b_pool = await asyncpg.connect(second_database)
            try:
                await b_pool.execute("TRUNCATE nodes, federation_jobs, peers, nonces, admin_audit, admin_settings")
            finally:
                await b_pool.close()
            common = {"relays": [relay_url], "peer_rate": 100_000}
            a = await stack.enter_async_context(running_router(database_url, **common, **(a_options or {})))
            b_settings = {"fee_base_msat": FEE, **(b_options or {})}
            b = await stack.enter_async_context(running_router(second_database, **common, **b_settings))
            node = FakeNode(model=MODEL)
            node.endpoint = await stack.enter_async_context(serve_app(node.app()))
            response = await register(b.url, b.pubkey, node.keys, node.descriptor())
            assert response.status_code == 200, response.text
            await ready(a)
            await ready(b)
            # a router without nodes announces SATURATED; B leaves it at its next load check
            await eventually(lambda: b.service.federation.backpressure == "NORMAL", 5, "B has capacity")
            # only a peer with fresh caps listing the model may win an award
            await eventually(
                lambda: (
                    b.pubkey in {p.pubkey for p in a.service.federation.peers.peers_for(MODEL, "text-generation", 0)}
                ),
                10,
                "A learned B's caps",
            )
            return Pair(a, b, node, relay_url)

        yield make


@pytest.fixture
async def pair(pair_factory: Callable[..., Any]) -> Pair:
    result: Pair = await pair_factory()
    return result


def make_rfb(**over: Any) -> Rfb:
    fields: dict[str, Any] = dict(
        job_type="text-generation",
        model=MODEL,
        privacy=0,
        input_tokens=10,
        max_tokens=20,
        max_price_msat=10_000,
        job_hash=secrets.token_hex(32),
        deadline_ms=int(time.time() * 1000) + 60_000,
    )
    fields.update(over)
    return Rfb(**fields)


def events(svc: RouterService, kind: str, result: str) -> float:
    value = svc.metrics.registry.get_sample_value("fedai_router_auction_events_total", {"kind": kind, "result": result})
    return value or 0.0


async def counted(svc: RouterService, kind: str, result: str, n: float = 1, within: float = 5.0) -> None:
    await eventually(lambda: events(svc, kind, result) >= n, within, f"{kind}/{result} counted {n}")


async def publish(router: RunningRouter, event: Event) -> None:
    relays = router.service.relays
    assert relays is not None
    results = await relays.publish(event)
    assert any(r.ok for r in results), results


# -- the auction end to end ----------------------------------------------------------------------


async def test_auction_awards_the_provider_and_both_sides_store_the_job(pair: Pair) -> None:
    rfb = make_rfb()
    awarded = await pair.auctioneer.auction(rfb, ttl_s=3.0, expect={pair.b.pubkey}, origin_id="e" * 64)
    assert awarded is not None and awarded.peer == pair.b.pubkey
    assert awarded.bid_payload.price_msat == PRICE and awarded.bid_payload.rfb == awarded.rfb.id
    award = decode_payload(awarded.award.content, Award)
    assert (award.bid, award.rfb, award.job_id, award.price_msat) == (
        awarded.bid.id,
        awarded.rfb.id,
        awarded.job_id,
        PRICE,
    )
    assert awarded.award.tag_values("p") == [pair.b.pubkey] and awarded.award.tag_values("e") == [awarded.bid.id]
    assert int(awarded.award.tag("expiration") or 0) > time.time()
    assert await pair.bidder.wait_accepted(awarded.job_id, 5)

    mine = await get_job(pair.a.service.pool, awarded.job_id)
    assert mine is not None
    assert (mine.role, mine.peer, mine.status, mine.award_id, mine.bid_id, mine.rfb_id, mine.origin_id) == (
        "requester",
        pair.b.pubkey,
        "awarded",
        awarded.award.id,
        awarded.bid.id,
        awarded.rfb.id,
        "e" * 64,
    )
    theirs = await find_award(pair.b.service.pool, awarded.award.id)
    assert theirs is not None
    assert (theirs.job_id, theirs.role, theirs.peer, theirs.status) == (
        awarded.job_id,
        "provider",
        pair.a.pubkey,
        "awarded",
    )
    assert (theirs.capacity_token, theirs.price_msat, theirs.privacy) == (award.capacity_token, PRICE, 0)
    assert pair.bidder.open_bids() == []  # the awarded bid is spent

    assert await start_job(pair.b.service.pool, awarded.job_id) is True
    assert await start_job(pair.b.service.pool, awarded.job_id) is False  # exactly one replica starts it
    assert await set_job_status(pair.b.service.pool, awarded.job_id, "done", awarded.award) is True
    done = await get_job(pair.b.service.pool, awarded.job_id)
    assert done is not None and done.status == "done" and done.receipt is not None
    assert done.receipt["id"] == awarded.award.id
    assert await find_award(pair.b.service.pool, "0" * 64) is None


async def test_the_expected_bidders_come_from_announcements_and_end_the_auction_early(pair: Pair) -> None:
    peers = pair.a.service.federation.peers
    await eventually(
        lambda: pair.b.pubkey in {p.pubkey for p in peers.peers_for(MODEL, "text-generation", 0)},
        10,
        "A learned B's caps",
    )
    started = time.monotonic()
    awarded = await pair.auctioneer.auction(make_rfb(), ttl_s=10.0)
    assert awarded is not None and awarded.peer == pair.b.pubkey
    assert time.monotonic() - started < 2.0


async def test_no_bid_for_what_the_provider_cannot_or_may_not_take(pair: Pair) -> None:
    jobs = [
        make_rfb(model="no-such-model"),
        make_rfb(privacy=3),  # never leaves a router
        make_rfb(max_price_msat=PRICE - 1),  # under what B charges
        make_rfb(max_tokens=5000),  # does not fit the node's context
    ]
    results = await asyncio.gather(*(pair.auctioneer.auction(job, ttl_s=0.7) for job in jobs))
    assert results == [None, None, None, None]
    assert events(pair.b.service, "rfb", "declined") == 4
    assert events(pair.b.service, "bid", "published") == 0
    assert await pair.a.service.pool.fetchval("SELECT count(*) FROM federation_jobs") == 0


# -- the provider refuses bad awards ---------------------------------------------------------------


async def open_bid(pair: Pair, rfb: Rfb | None = None) -> tuple[Event, OpenBid]:
    """A publishes an RFB by hand (no auction running); wait for B's bid on it."""
    job = rfb or make_rfb()
    event = seal(
        pair.a.keys,
        Kind.RFB,
        job,
        nonce=True,
        expiration=int(time.time()) + 30,
        extra_tags=[["t", job.job_type], ["model", job.model]],
    )
    await publish(pair.a, event)
    found: list[OpenBid] = []

    def bid_made() -> bool:
        found[:] = [b for b in pair.bidder.open_bids() if b.rfb_id == event.id]
        return bool(found)

    await eventually(bid_made, 5, "B bid")
    return event, found[0]


def award_for(
    bid: OpenBid,
    provider: str,
    *,
    keys: Keys,
    to: list[str] | None = None,
    bid_id: str | None = None,
    token: str | None = None,
    price: int | None = None,
    expiration: int | None = None,
    job_id: str | None = None,
) -> Event:
    payload = Award(
        rfb=bid.rfb_id,
        bid=bid_id or bid.bid_id,
        job_id=job_id or secrets.token_hex(16),
        price_msat=bid.price_msat if price is None else price,
        capacity_token=token or bid.capacity_token,
    )
    tags = [["p", key] for key in (to or [provider])]
    return seal(
        keys,
        Kind.AWARD,
        payload,
        reply_to=bid_id or bid.bid_id,
        extra_tags=tags,
        expiration=expiration if expiration is not None else int(time.time()) + 30,
    )


async def test_the_provider_accepts_only_a_matching_award_for_its_own_bid(pair: Pair) -> None:
    b = pair.b.service
    _, bid = await open_bid(pair)
    assert bid.requester == pair.a.pubkey and bid.price_msat == PRICE
    stranger = Keys.generate()
    bad = {
        "wrong_recipient": award_for(bid, b.pubkey, keys=pair.a.keys, to=[b.pubkey, stranger.pubkey]),
        "unknown_bid": award_for(bid, b.pubkey, keys=pair.a.keys, bid_id=secrets.token_hex(32)),
        "wrong_token": award_for(bid, b.pubkey, keys=pair.a.keys, token=secrets.token_hex(16)),
        "over_price": award_for(bid, b.pubkey, keys=pair.a.keys, price=bid.price_msat + 1),
        "wrong_signer": award_for(bid, b.pubkey, keys=stranger),
    }
    for result, event in bad.items():
        await publish(pair.a, event)
        await counted(b, "award", result)
    elsewhere = award_for(bid, b.pubkey, keys=pair.a.keys, to=[stranger.pubkey])  # addressed to another router only
    await publish(pair.a, elsewhere)
    expired = award_for(bid, b.pubkey, keys=pair.a.keys, expiration=int(time.time()) - 1)
    await pair.bidder._on_award(expired, "direct")  # relays may drop expired events: hand it over directly
    assert events(b, "award", "expired") == 1
    assert await b.pool.fetchval("SELECT count(*) FROM federation_jobs") == 0
    assert [o.bid_id for o in pair.bidder.open_bids()] == [bid.bid_id]  # none of them used the bid up

    good = award_for(bid, b.pubkey, keys=pair.a.keys, price=bid.price_msat - 1)  # below the bid is fine
    await publish(pair.a, good)
    await counted(b, "award", "accepted")
    row = await find_award(b.pool, good.id)
    assert row is not None and row.price_msat == bid.price_msat - 1 and row.peer == pair.a.pubkey
    assert events(b, "award", "accepted") == 1
    again = award_for(bid, b.pubkey, keys=pair.a.keys)  # a second award for the same bid
    await pair.bidder._on_award(again, "direct")
    assert events(b, "award", "unknown_bid") == 2
    assert await b.pool.fetchval("SELECT count(*) FROM federation_jobs") == 1


async def test_a_cancelled_rfb_gets_no_award_acceptance(pair: Pair) -> None:
    b = pair.b.service
    rfb_event, bid = await open_bid(pair)
    impostor = Keys.generate()
    forged = seal(
        impostor,
        Kind.CANCEL,
        Cancel(rfb=rfb_event.id, reason="not mine"),
        reply_to=rfb_event.id,
        expiration=int(time.time()) + 30,
    )
    await publish(pair.a, forged)
    await counted(b, "cancel", "noted")
    assert [o.bid_id for o in pair.bidder.open_bids()] == [bid.bid_id]  # only the RFB's author may withdraw it

    assert await pair.auctioneer.cancel(rfb_event, "client went away")
    await counted(b, "cancel", "dropped")
    assert pair.bidder.open_bids() == []
    await publish(pair.a, award_for(bid, b.pubkey, keys=pair.a.keys))
    await counted(b, "award", "unknown_bid")
    assert await b.pool.fetchval("SELECT count(*) FROM federation_jobs") == 0


async def test_cancel_after_the_award_withdraws_a_job_not_yet_started(pair: Pair) -> None:
    awarded = await pair.auctioneer.auction(make_rfb(), ttl_s=3.0, expect={pair.b.pubkey})
    assert awarded is not None and await pair.bidder.wait_accepted(awarded.job_id, 5)
    assert await pair.auctioneer.cancel(awarded.rfb, "served locally after all")
    pool = pair.b.service.pool
    await counted(pair.b.service, "cancel", "noted")
    row = await get_job(pool, awarded.job_id)
    assert row is not None and row.status == "cancelled"
    assert await start_job(pool, awarded.job_id) is False


# -- the requester refuses bad bids ----------------------------------------------------------------


@dataclass
class ScriptedBidder:
    """A peer that answers every RFB from `requester` with one scripted bid."""

    keys: Keys
    requester: str
    price: int = 10
    delay_s: float = 0.0
    seen: int = 0

    async def on_rfb(self, pool: RelayPool, event: Event) -> None:
        if event.pubkey != self.requester:
            return
        self.seen += 1
        await asyncio.sleep(self.delay_s)
        bid = Bid(rfb=event.id, price_msat=self.price, eta_ms=10, capacity_token=secrets.token_hex(16))
        reply = seal(
            self.keys, Kind.BID, bid, to=event.pubkey, reply_to=event.id, expiration=int(event.tag("expiration") or 0)
        )
        await pool.publish(reply)


async def scripted(stack: AsyncExitStack, relay_url: str, bidder: ScriptedBidder) -> None:
    pool = await stack.enter_async_context(RelayPool([relay_url]))
    assert await pool.wait_connected(5)

    async def handler(event: Event, _relay: str) -> None:
        asyncio.get_running_loop().create_task(bidder.on_rfb(pool, event))

    sub = await pool.subscribe([{"kinds": [int(Kind.RFB)]}], handler)
    assert await sub.wait_eose(5)


async def test_blocked_over_cap_and_late_bids_lose_to_the_honest_one(pair_factory: Callable[..., Any]) -> None:
    blocked, greedy, late = Keys.generate(), Keys.generate(), Keys.generate()
    pair: Pair = await pair_factory({"peer_blocklist": frozenset({blocked.pubkey})})
    a = pair.a.service
    ttl = 1.0
    async with AsyncExitStack() as stack:
        for bidder in (
            ScriptedBidder(blocked, pair.a.pubkey, price=1),  # cheapest, but blocked
            ScriptedBidder(greedy, pair.a.pubkey, price=10_001),  # above the cap
            ScriptedBidder(late, pair.a.pubkey, price=2, delay_s=ttl + 0.3),  # after bidding closed
        ):
            await scripted(stack, pair.relay_url, bidder)
        everyone = {pair.b.pubkey, blocked.pubkey, greedy.pubkey, late.pubkey}  # so bidding runs the whole TTL
        awarded = await pair.auctioneer.auction(make_rfb(max_price_msat=10_000), ttl_s=ttl, expect=everyone)
        assert awarded is not None and awarded.peer == pair.b.pubkey
        await counted(a, "bid", "late")
    assert events(a, "bid", "blocked") == 1
    assert events(a, "bid", "over_cap") == 1
    assert events(a, "bid", "accepted") == 1
    assert await a.pool.fetchval("SELECT array_agg(peer) FROM federation_jobs") == [pair.b.pubkey]


# -- posted-price routing --------------------------------------------------------------------------


async def test_posted_price_awards_the_chosen_peer_without_waiting_out_a_ttl(pair: Pair) -> None:
    intruder = Keys.generate()
    async with AsyncExitStack() as stack:
        await scripted(stack, pair.relay_url, ScriptedBidder(intruder, pair.a.pubkey, price=1))
        started = time.monotonic()
        awarded = await pair.auctioneer.award_posted(pair.b.pubkey, make_rfb(), ttl_s=10.0)
        elapsed = time.monotonic() - started
        assert awarded is not None and awarded.peer == pair.b.pubkey
        assert elapsed < 2.0
        assert awarded.rfb.tag_values("p") == [pair.b.pubkey]
        assert await pair.bidder.wait_accepted(awarded.job_id, 5)
        # the intruder's cheaper bid was refused: not addressed (or, arriving after B's, too late)
        a = pair.a.service
        await eventually(lambda: events(a, "bid", "not_addressed") + events(a, "bid", "late") == 1)


async def test_an_rfb_addressed_to_another_peer_gets_no_bid(pair: Pair) -> None:
    other = Keys.generate()
    assert await pair.auctioneer.award_posted(other.pubkey, make_rfb(), ttl_s=0.5) is None
    await counted(pair.b.service, "rfb", "not_addressed")
    assert events(pair.b.service, "bid", "published") == 0


async def test_posted_price_routing_from_the_price_sheets(pair: Pair) -> None:
    rfb = make_rfb()
    await eventually(lambda: bool(pair.auctioneer.posted_peers(rfb)), 10, "A has B's price sheet")
    [offer] = pair.auctioneer.posted_peers(rfb)
    assert offer.pubkey == pair.b.pubkey and offer.price_msat >= PRICE - FEE
    awarded = await pair.auctioneer.route_posted(rfb)
    assert awarded is not None and awarded.peer == pair.b.pubkey
    assert awarded.bid_payload.price_msat <= offer.price_msat  # the bid honours the posted price
    assert await pair.bidder.wait_accepted(awarded.job_id, 5)


async def test_the_admin_fee_is_in_the_next_price_announcement_and_bid(
    pair_factory: Callable[..., Any],
) -> None:
    """A fee set through B's admin API (runbooks/admin.md) replaces ROUTER_FEE_* in its price sheets (re-announced
    at once) and in its bids, without a restart."""
    operator = Keys.generate()
    pair: Pair = await pair_factory(b_options={"admin_keys": frozenset({operator.pubkey})})
    book = pair.a.service.federation.peers

    def base_msat() -> int | None:
        sheet = book.price(pair.b.pubkey, MODEL, "text-generation")
        return None if sheet is None else sheet.base_msat

    await eventually(lambda: base_msat() == FEE, 10, "A has B's price sheet with B's environment fee")
    url = pair.b.url + "/admin/api/fees"
    body = json.dumps({"fee_base_msat": 50, "fee_ppm": 100_000}).encode()
    headers = {"Authorization": auth_header(operator, "POST", url, body), "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        response = await http.post(url, content=body, headers=headers)
    assert response.status_code == 200, response.text

    await eventually(lambda: base_msat() == 50, 10, "B re-announced its prices with the admin fee")
    sheet = book.price(pair.b.pubkey, MODEL, "text-generation")
    assert sheet is not None and (sheet.input_msat, sheet.output_msat) == (1100, 2200)  # 1000 and 2000 + 10 %
    awarded = await pair.auctioneer.auction(make_rfb(), ttl_s=3.0, expect={pair.b.pubkey}, origin_id="f" * 64)
    assert awarded is not None and awarded.peer == pair.b.pubkey
    assert awarded.bid_payload.price_msat == 10 + 40 + 50 + 5  # the node's 50 msat, 50 base, 10 % of 50
