"""The requester's auction without relays or a database: which bids count, early end, anti-thrash, breaker."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from fedai.nostr import PublishResult
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Bid, Cancel, Rfb, RouterCaps, RouterLimits
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import decode_payload
from fedai_router.config import RouterSettings
from fedai_router.federation.auction import Auctioneer
from fedai_router.federation.choice import BidView
from fedai_router.metrics import RouterMetrics

PEER = Keys.generate()
OTHER = Keys.generate()


@dataclass
class FakeRelays:
    """Takes every publish; `respond` may answer an RFB with events delivered to the bid handler."""

    published: list[Event] = field(default_factory=list)
    respond: Callable[[Event], list[Event]] | None = None
    deliver: Callable[[Event, str], Awaitable[None]] | None = None

    async def publish(self, event: Event, timeout: float = 5.0) -> list[PublishResult]:  # noqa: ASYNC109
        self.published.append(event)
        if event.kind == Kind.RFB and self.respond is not None and self.deliver is not None:
            for reply in self.respond(event):
                await self.deliver(reply, "fake")
        return [PublishResult("ws://fake", True, "")]

    def kinds(self) -> list[int]:
        return [e.kind for e in self.published]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def caps(endpoint: str = "https://peer.example", models: tuple[str, ...] = ("m",)) -> RouterCaps:
    return RouterCaps(
        endpoint=endpoint,
        job_types=["text-generation"],
        models=list(models),
        limits=RouterLimits(max_tokens=100, max_request_bytes=1024),
        max_privacy=2,
    )


@dataclass
class FakeBook:
    """The peer book as the auction reads it: every peer has fresh caps for model `m` unless `caps` says else."""

    states: dict[str, str] = field(default_factory=dict)
    caps: dict[str, RouterCaps | None] = field(default_factory=dict)

    def policy_state(self, key: str) -> str:
        return self.states.get(key, "ok")

    def peers_for(self, *args: Any) -> list[Any]:
        return []

    def view(self, key: str, now: float | None = None) -> Any:
        held = self.caps.get(key, caps())
        return None if held is None else SimpleNamespace(pubkey=key, caps=held)


def make(**settings: Any) -> tuple[Auctioneer, FakeRelays, Clock]:
    keys = Keys.generate()
    relays = FakeRelays()
    clock = Clock()
    auctioneer = Auctioneer(
        keys=keys,
        settings=RouterSettings(keys=keys, **settings),
        relays=relays,  # type: ignore[arg-type]
        pool=None,
        peers=FakeBook(),  # type: ignore[arg-type]
        metrics=RouterMetrics().registry,
        clock=clock,
    )
    relays.deliver = auctioneer._on_bid
    return auctioneer, relays, clock


def rfb(job_hash: str = "a" * 64, **over: Any) -> Rfb:
    fields: dict[str, Any] = dict(
        job_type="text-generation",
        model="m",
        privacy=0,
        input_tokens=10,
        max_tokens=20,
        max_price_msat=1000,
        job_hash=job_hash,
        deadline_ms=int(time.time() * 1000) + 60_000,
    )
    fields.update(over)
    return Rfb(**fields)


def bid_on(
    rfb_event: Event,
    keys: Keys = PEER,
    *,
    price: int = 100,
    eta_ms: int = 50,
    to: str | None = None,
    expiration: int | None = None,
    rfb_id: str | None = None,
) -> Event:
    payload = Bid(rfb=rfb_id or rfb_event.id, price_msat=price, eta_ms=eta_ms, capacity_token="1" * 32)
    expires = expiration if expiration is not None else int(rfb_event.tag("expiration") or 0)
    return seal(keys, Kind.BID, payload, to=to or rfb_event.pubkey, reply_to=rfb_event.id, expiration=expires)


def count(auctioneer: Auctioneer, kind: str, result: str) -> float:
    value = auctioneer.metrics.get_sample_value("fedai_router_auction_events_total", {"kind": kind, "result": result})
    return value or 0.0


class Seen:
    """A `choose` that records what it was offered and picks nothing (so no award, no database)."""

    def __init__(self) -> None:
        self.offered: list[list[BidView]] = []

    def __call__(self, bids: list[BidView], now: float) -> BidView | None:
        self.offered.append(bids)
        return None


async def test_rfb_is_signed_tagged_and_expires_before_the_deadline() -> None:
    auctioneer, relays, _ = make()
    job = rfb(deadline_ms=int(time.time() * 1000) + 3_000)
    assert await auctioneer.auction(job, ttl_s=0.01) is None
    [event] = relays.published
    assert event.kind == Kind.RFB and event.pubkey == auctioneer.keys.pubkey
    assert ["t", "text-generation"] in event.tags and ["model", "m"] in event.tags and event.tag("nonce")
    assert event.tag("p") is None  # open to every peer
    assert int(event.tag("expiration") or 0) <= job.deadline_ms / 1000 + 1
    assert decode_payload(event.content, Rfb) == job


async def test_valid_bids_reach_choose_and_bad_ones_are_counted() -> None:
    auctioneer, relays, _ = make()
    stranger = Keys.generate()
    relays.respond = lambda e: [
        bid_on(e),  # good
        bid_on(e, OTHER, price=1001),  # above the cap
        bid_on(e, stranger, eta_ms=10_000_000),  # cannot finish before the deadline
        bid_on(e, stranger, to=OTHER.pubkey),  # addressed to someone else
        bid_on(e, stranger, rfb_id="9" * 64),  # payload names another RFB
        bid_on(e, stranger, expiration=int(time.time()) - 1),  # expired
        bid_on(e, stranger, price=5, eta_ms=1),  # good
    ]
    seen = Seen()
    assert await auctioneer.auction(rfb(), ttl_s=0.05, choose=seen) is None
    assert sorted(v.price_msat for v in seen.offered[0]) == [5, 100]
    assert count(auctioneer, "bid", "accepted") == 2
    for result in ("over_cap", "too_slow", "wrong_recipient", "mismatch", "expired"):
        assert count(auctioneer, "bid", result) == 1, result
    assert relays.kinds()[-1] == Kind.CANCEL  # bids came but none was chosen: bidders may release them
    cancel = decode_payload(relays.published[-1].content, Cancel)
    assert cancel.rfb == relays.published[0].id and relays.published[-1].tag("e") == relays.published[0].id


async def test_a_bid_without_expiration_is_refused() -> None:
    auctioneer, relays, _ = make()
    relays.respond = lambda e: [
        seal(PEER, Kind.BID, Bid(rfb=e.id, price_msat=1, eta_ms=1, capacity_token="1" * 32), to=e.pubkey, reply_to=e.id)
    ]
    seen = Seen()
    await auctioneer.auction(rfb(), ttl_s=0.02, choose=seen)
    assert seen.offered == [] and count(auctioneer, "bid", "invalid_event") == 1


async def test_bids_after_the_ttl_and_for_unknown_rfbs_are_not_taken() -> None:
    auctioneer, relays, _ = make()
    seen = Seen()
    await auctioneer.auction(rfb(), ttl_s=0.01, choose=seen)
    rfb_event = relays.published[0]
    await auctioneer._on_bid(bid_on(rfb_event), "fake")
    stranger_rfb = seal(OTHER, Kind.RFB, rfb(), expiration=int(time.time()) + 30)
    await auctioneer._on_bid(bid_on(stranger_rfb, to=auctioneer.keys.pubkey), "fake")
    assert count(auctioneer, "bid", "late") == 1 and count(auctioneer, "bid", "unknown_rfb") == 1
    assert count(auctioneer, "bid", "accepted") == 0


async def test_the_auction_ends_as_soon_as_every_expected_peer_has_bid() -> None:
    auctioneer, relays, _ = make()
    relays.respond = lambda e: [bid_on(e), bid_on(e, OTHER)]
    seen = Seen()
    started = time.monotonic()
    await auctioneer.auction(rfb(), ttl_s=5.0, choose=seen, expect={PEER.pubkey, OTHER.pubkey})
    assert time.monotonic() - started < 1.0
    assert {v.peer for v in seen.offered[0]} == {PEER.pubkey, OTHER.pubkey}


async def test_a_missing_expected_peer_means_waiting_out_the_ttl() -> None:
    auctioneer, relays, _ = make()
    relays.respond = lambda e: [bid_on(e)]
    started = time.monotonic()
    await auctioneer.auction(rfb(), ttl_s=0.3, choose=Seen(), expect={PEER.pubkey, OTHER.pubkey})
    assert time.monotonic() - started >= 0.3


async def test_no_reauction_within_the_cooldown_unless_retrying() -> None:
    auctioneer, _, clock = make(reauction_cooldown_ms=5_000)
    await auctioneer.auction(rfb(), ttl_s=0.01)
    with pytest.raises(FedaiError) as err:
        await auctioneer.auction(rfb(), ttl_s=0.01)
    assert err.value.code is ErrorCode.NO_CAPACITY and 4_000 < (err.value.retry_after_ms or 0) <= 5_000
    assert count(auctioneer, "rfb", "cooldown") == 1
    await auctioneer.auction(rfb("b" * 64), ttl_s=0.01)  # another job is not held back
    await auctioneer.auction(rfb(), ttl_s=0.01, key="origin-2")  # nor the same content under another key
    clock.now += 5.0
    await auctioneer.auction(rfb(), ttl_s=0.01)  # cooled down


async def test_retry_budget_per_job() -> None:
    auctioneer, relays, _ = make(fed_max_attempts=2)
    await auctioneer.auction(rfb(), ttl_s=0.01)
    await auctioneer.auction(rfb(), ttl_s=0.01, retry=True, exclude={PEER.pubkey})
    with pytest.raises(FedaiError, match="retry budget"):
        await auctioneer.auction(rfb(), ttl_s=0.01, retry=True)
    assert relays.kinds() == [Kind.RFB, Kind.RFB]
    assert count(auctioneer, "rfb", "retry_budget") == 1


async def test_a_retry_excludes_the_failed_peer_for_the_rest_of_the_job() -> None:
    auctioneer, relays, _ = make(fed_max_attempts=3)
    relays.respond = lambda e: [bid_on(e), bid_on(e, OTHER, price=900)]
    seen = Seen()
    await auctioneer.auction(rfb(), ttl_s=0.02, choose=seen)
    await auctioneer.auction(rfb(), ttl_s=0.02, choose=seen, retry=True, exclude={PEER.pubkey})
    await auctioneer.auction(rfb(), ttl_s=0.02, choose=seen, retry=True)  # still excluded
    assert [[v.peer for v in offered] for offered in seen.offered] == [
        [PEER.pubkey, OTHER.pubkey],
        [OTHER.pubkey],
        [OTHER.pubkey],
    ]
    assert count(auctioneer, "bid", "excluded") == 2


async def test_the_breaker_skips_a_failing_peer_until_its_cooldown_ends() -> None:
    auctioneer, relays, clock = make(peer_breaker_failures=3, peer_breaker_cooldown_s=2)
    relays.respond = lambda e: [bid_on(e)]
    for _ in range(3):
        auctioneer.record_outcome(PEER.pubkey, ok=False)
    seen = Seen()
    await auctioneer.auction(rfb("1" * 64), ttl_s=0.02, choose=seen)
    assert seen.offered == [] and count(auctioneer, "bid", "breaker") == 1
    clock.now += 2.5
    await auctioneer.auction(rfb("2" * 64), ttl_s=0.02, choose=seen)
    [view] = seen.offered[-1]
    assert view.peer == PEER.pubkey and view.reputation == pytest.approx(0.2)  # 0 done, 3 failed


async def test_a_blocked_or_muted_peer_bid_is_ignored() -> None:
    auctioneer, relays, _ = make()
    states = {PEER.pubkey: "blocked", OTHER.pubkey: "muted"}
    auctioneer.peers = FakeBook(states=states)  # type: ignore[assignment]
    relays.respond = lambda e: [bid_on(e), bid_on(e, OTHER)]
    seen = Seen()
    await auctioneer.auction(rfb(), ttl_s=0.02, choose=seen)
    assert seen.offered == [] and count(auctioneer, "bid", "blocked") == 2


async def test_a_targeted_rfb_takes_only_its_peer_and_ends_on_the_first_bid() -> None:
    auctioneer, relays, _ = make()
    relays.respond = lambda e: [bid_on(e, OTHER), bid_on(e)]
    seen = Seen()
    started = time.monotonic()
    await auctioneer.auction(rfb(), ttl_s=5.0, choose=seen, to=PEER.pubkey)
    assert time.monotonic() - started < 1.0
    assert relays.published[0].tag_values("p") == [PEER.pubkey]
    assert [v.peer for v in seen.offered[0]] == [PEER.pubkey]
    assert count(auctioneer, "bid", "not_addressed") == 1


async def test_a_deadline_already_past_is_refused() -> None:
    auctioneer, relays, _ = make()
    with pytest.raises(FedaiError) as err:
        await auctioneer.auction(rfb(deadline_ms=int(time.time() * 1000) - 5_000), ttl_s=0.01)
    assert err.value.code is ErrorCode.INVALID_REQUEST and relays.published == []


@pytest.mark.parametrize(
    ("book", "settings", "result"),
    [
        (FakeBook(caps={PEER.pubkey: None}), {}, "no_caps"),  # a fresh key that never announced caps
        (FakeBook(caps={PEER.pubkey: caps(models=("other",))}), {}, "no_caps"),  # caps without the model
        (FakeBook(caps={PEER.pubkey: caps(endpoint="ftp://peer.example")}), {}, "bad_endpoint"),
        (FakeBook(caps={PEER.pubkey: caps(endpoint="https://user:pw@peer.example")}), {}, "bad_endpoint"),
        (FakeBook(), {"fed_min_reputation": 0.6}, "low_reputation"),  # a stranger scores 0.5
    ],
)
async def test_a_zero_bid_from_a_peer_unfit_for_an_award_is_never_offered(
    book: FakeBook, settings: dict[str, Any], result: str
) -> None:
    auctioneer, relays, _ = make(**settings)
    auctioneer.peers = book  # type: ignore[assignment]
    relays.respond = lambda e: [bid_on(e, price=0), bid_on(e, OTHER, price=900)]
    seen = Seen()
    await auctioneer.auction(rfb(), ttl_s=0.05, choose=seen, expect={PEER.pubkey, OTHER.pubkey})
    offered = [v.peer for v in seen.offered[0]] if seen.offered else []
    expected_other = [] if result == "low_reputation" else [OTHER.pubkey]  # the minimum applies to every stranger
    assert offered == expected_other and count(auctioneer, "bid", result) >= 1
