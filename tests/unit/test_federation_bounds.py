"""Pure pieces of the federation bounds (issue 9, parts 3 and 5): the salted job hash, the check of a submitted
job against what was bid, and which peer gives way when the peer book is full."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import Bid, Rfb, job_hash, job_request, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import ChatMessage, InferenceRequest, estimate_tokens, prompt_material
from fedai_router.config import RouterSettings
from fedai_router.federation.bidder import Bidder
from fedai_router.federation.jobs import binding_problems
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.policy import PeerPolicy
from fedai_router.metrics import RouterMetrics
from fedai_router.store.federation import JobTerms
from fedai_router.store.peers import PeerRow
from tests.unit.test_peer_policy import NOW, announce, caps, sheet, status

REQUEST = InferenceRequest(model="m", prompt="the guessable prompt", max_tokens=16)


# -- the salted job hash ---------------------------------------------------------------------------


def test_the_published_hash_confirms_nothing_without_the_salt() -> None:
    salt = new_salt()
    unsalted = hashlib.sha256(msgspec.json.encode(job_request(REQUEST))).hexdigest()  # what relays carried before
    assert job_hash(REQUEST, salt) != unsalted
    assert job_hash(REQUEST, salt) != job_hash(REQUEST, new_salt())  # every auction publishes another value
    assert job_hash(REQUEST, salt) == job_hash(REQUEST, salt)  # the provider and the client can recompute it


def test_the_hash_covers_what_leaves_the_router_and_nothing_else() -> None:
    salt = new_salt()
    same_job = msgspec.structs.replace(REQUEST, client="a" * 64, quote_id="q", max_price_msat=5, stream=True)
    assert job_hash(same_job, salt) == job_hash(REQUEST, salt)  # client fields never leave: not hashed either
    for other in (
        msgspec.structs.replace(REQUEST, prompt="another prompt"),
        msgspec.structs.replace(REQUEST, max_tokens=17),
        msgspec.structs.replace(REQUEST, model="n"),
    ):
        assert job_hash(other, salt) != job_hash(REQUEST, salt)


@pytest.mark.parametrize("salt", ["", "00" * 16, "zz" * 32])
def test_a_salt_is_32_bytes_of_hex(salt: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        job_hash(REQUEST, salt)


def test_rfb_sizes_are_bounded_to_what_storage_holds() -> None:
    fields: dict[str, Any] = dict(
        job_type="t",
        model="m",
        privacy=1,
        input_tokens=1,
        max_tokens=1,
        max_price_msat=1,
        job_hash="a" * 64,
        deadline_ms=1,
    )
    for name, value in (("input_tokens", 2**31), ("max_tokens", 1_000_001), ("deadline_ms", 2**53 + 1)):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({**fields, name: value}, Rfb)


# -- a submitted job against the bid's terms -------------------------------------------------------


def terms(request: InferenceRequest, salt: str, **over: Any) -> JobTerms:
    fields: dict[str, Any] = dict(
        job_type="text-generation",
        model=request.model,
        max_tokens=request.max_tokens,
        input_tokens=estimate_tokens(len(prompt_material(request))),
        job_hash=job_hash(request, salt),
        deadline_ms=0,
    )
    fields.update(over)
    return JobTerms(**fields)


def test_the_job_bid_on_passes() -> None:
    salt = new_salt()
    assert binding_problems(terms(REQUEST, salt), REQUEST, job_hash(REQUEST, salt)) == []
    smaller = msgspec.structs.replace(REQUEST, max_tokens=4)  # a smaller job than declared, hashed as bid on
    assert (
        binding_problems(terms(REQUEST, salt, job_hash=job_hash(smaller, salt)), smaller, job_hash(smaller, salt)) == []
    )


@pytest.mark.parametrize(
    ("job", "declared", "problems"),
    [
        # the RFB hashed this job but declared it smaller than it is: the provider would eat the difference
        (msgspec.structs.replace(REQUEST, prompt="x" * 4_000), {}, ["input size"]),
        (msgspec.structs.replace(REQUEST, max_tokens=4_096), {}, ["max_tokens"]),
        (msgspec.structs.replace(REQUEST, model="big-model"), {}, ["model"]),
        (msgspec.structs.replace(REQUEST, job_type="embedding"), {}, ["job type"]),
        (
            InferenceRequest(model="m", messages=[ChatMessage(role="user", content="y" * 400)], max_tokens=16),
            {},
            ["input size"],
        ),
        # another job than the one the RFB hashed
        (REQUEST, {"job_hash": "0" * 64}, ["job hash"]),
    ],
)
def test_a_job_other_than_the_bid_is_named(
    job: InferenceRequest, declared: dict[str, Any], problems: list[str]
) -> None:
    salt = new_salt()
    bid_terms = terms(REQUEST, salt, **{"job_hash": job_hash(job, salt), **declared})
    assert binding_problems(bid_terms, job, job_hash(job, salt)) == problems


# -- the peer book's bounds ------------------------------------------------------------------------


def book(**options: Any) -> PeerBook:
    policy = options.pop("policy", PeerPolicy())
    return PeerBook(
        Keys.generate().pubkey,
        policy,
        skew_s=60,
        max_content_bytes=4096,
        ttl_s=300,
        registry=CollectorRegistry(),
        **options,
    )


async def test_price_sheets_per_peer_are_capped() -> None:
    b, peer = book(max_price_sheets=2), Keys.generate()
    results = [await b.handle(announce(peer, sheet(f"job-{i}")), None, now=NOW) for i in range(4)]
    assert results == ["accepted", "accepted", "too_many_sheets", "too_many_sheets"]
    newer = announce(peer, sheet("job-0", inp=1), created_at=NOW + 1)  # a held job type still updates
    assert await b.handle(newer, None, now=NOW + 1) == "accepted"


async def test_a_full_book_takes_a_newcomer_only_in_place_of_a_stale_peer_or_for_a_trusted_one() -> None:
    followed = Keys.generate()
    b = book(max_peers=2, policy=PeerPolicy(follow=frozenset({followed.pubkey})))
    old, fresh, stranger = Keys.generate(), Keys.generate(), Keys.generate()
    assert await b.handle(announce(old, caps(), expires=NOW + 10), None, now=NOW) == "accepted"
    assert await b.handle(announce(fresh, status(), created_at=NOW + 5), None, now=NOW + 5) == "accepted"
    later = NOW + 20  # `old` has nothing fresh left: it gives way
    assert await b.handle(announce(stranger, caps(), created_at=later), None, now=later) == "accepted"
    assert set(b.known()) == {fresh.pubkey, stranger.pubkey}
    other = Keys.generate()  # nobody stale, and a stranger: refused
    assert await b.handle(announce(other, caps(), created_at=later), None, now=later) == "full"
    assert await b.handle(announce(followed, caps(), created_at=later), None, now=later) == "accepted"
    assert set(b.known()) == {stranger.pubkey, followed.pubkey}  # the least recently seen stranger went


def test_restore_keeps_the_most_recent_peers_up_to_the_cap() -> None:
    rows = [
        PeerRow(
            pubkey=f"{i:064x}",
            caps=None,
            prices={},
            status=None,
            announcements={},
            first_seen=datetime.fromtimestamp(NOW, UTC),
            updated_at=datetime.fromtimestamp(NOW + i, UTC),
        )
        for i in range(5)
    ]
    b = book(max_peers=2)
    assert b.restore(rows) == 2 and b.known() == [f"{3:064x}", f"{4:064x}"]


async def test_peers_silent_for_a_day_are_pruned() -> None:
    b, silent, alive = book(), Keys.generate(), Keys.generate()
    assert await b.handle(announce(silent, caps()), None, now=NOW) == "accepted"
    later = NOW + 86_400 + 300
    assert await b.handle(announce(alive, caps(), created_at=later, expires=later + 180), None, now=later) == "accepted"
    assert await b.prune(None, now=later) == 1
    assert b.known() == [alive.pubkey]


# -- the bidder's bounds ---------------------------------------------------------------------------


def bidder(**settings: Any) -> tuple[Bidder, list[Any]]:
    keys = Keys.generate()
    spawned: list[Any] = []

    def spawn(coro: Any, _what: str) -> None:
        spawned.append(coro)
        coro.close()  # the bid is not published anywhere in these tests

    def quote(event: Event, rfb: Rfb) -> Bid:
        return Bid(rfb=event.id, price_msat=10, eta_ms=10, capacity_token="1" * 32)

    bidder = Bidder(
        keys=keys,
        settings=RouterSettings(keys=keys, **settings),
        relays=None,  # type: ignore[arg-type]
        pool=None,
        peers=SimpleNamespace(policy_state=lambda key: "ok"),  # type: ignore[arg-type]
        metrics=RouterMetrics().registry,
        spawn=spawn,
        quote=quote,
    )
    return bidder, spawned


def rfb_event(requester: Keys, *, expires_in: int = 30, deadline_in_s: int = 60) -> Event:
    now = time.time()
    rfb = Rfb(
        job_type="text-generation",
        model="m",
        privacy=1,
        input_tokens=1,
        max_tokens=1,
        max_price_msat=100,
        job_hash="a" * 64,
        deadline_ms=int((now + deadline_in_s) * 1000),
    )
    return seal(requester, Kind.RFB, rfb, nonce=True, expiration=int(now) + expires_in)


async def test_an_open_bid_holds_capacity_no_longer_than_the_cap() -> None:
    b, _ = bidder(fed_bid_hold_s=30)
    assert await b._take_rfb(rfb_event(Keys.generate(), expires_in=3_600)) == "bid"
    [held] = b.open_bids()
    assert held.expires_at <= time.time() + 30
    assert held.terms.max_tokens == 1 and held.terms.job_hash == "a" * 64  # what the bid was for


async def test_no_bid_on_a_far_deadline_or_past_the_requesters_share() -> None:
    b, _ = bidder(fed_max_deadline_s=600, fed_max_open_bids_per_peer=2)
    greedy = Keys.generate()
    assert await b._take_rfb(rfb_event(greedy, deadline_in_s=3_600)) == "too_long"
    assert [await b._take_rfb(rfb_event(greedy)) for _ in range(3)] == ["bid", "bid", "peer_full"]
    assert await b._take_rfb(rfb_event(Keys.generate())) == "bid"  # another requester still gets one
    assert b.bids_for(greedy.pubkey) == 2


async def test_award_waits_only_for_requesters_we_hold_bids_for() -> None:
    b, _ = bidder()
    requester = Keys.generate()
    assert not b.begin_award_wait(requester.pubkey)  # no open bid: nothing is on its way
    await b._take_rfb(rfb_event(requester))
    assert b.begin_award_wait(requester.pubkey) and not b.begin_award_wait(requester.pubkey)  # one per open bid
    b.end_award_wait(requester.pubkey)
    assert b.begin_award_wait(requester.pubkey)
