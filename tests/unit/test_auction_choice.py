"""The pure parts of an auction: choosing a bid, posted-price routing, reputation and the circuit breaker."""

from __future__ import annotations

import pytest

from fedai.protocol.federation import Rfb
from fedai_router.federation.choice import (
    BidView,
    ChoiceWeights,
    PostedPeer,
    choose_posted,
    default_choice,
    make_choice,
)
from fedai_router.federation.reputation import Reputation

NOW = 1_700_000_000.0
A, B, C = "a" * 64, "b" * 64, "c" * 64


def bid(
    peer: str,
    price: int,
    eta_ms: int,
    *,
    rep: float = 0.5,
    breaker: float = 0.0,
    expires: float = NOW + 10,
    event_id: str | None = None,
) -> BidView:
    return BidView(
        event_id=event_id or peer[:1] * 64,
        peer=peer,
        price_msat=price,
        eta_ms=eta_ms,
        capacity_token="0" * 32,
        expires_at=expires,
        reputation=rep,
        breaker_until=breaker,
    )


def rfb(**over: object) -> Rfb:
    fields: dict[str, object] = dict(
        job_type="text-generation",
        model="m",
        privacy=0,
        input_tokens=10,
        max_tokens=20,
        max_price_msat=1000,
        job_hash="f" * 64,
        deadline_ms=int(NOW * 1000) + 60_000,
    )
    fields.update(over)
    return Rfb(**fields)  # type: ignore[arg-type]


def test_no_bids_no_winner() -> None:
    assert default_choice([], NOW) is None


def test_cheaper_wins_when_all_else_is_equal() -> None:
    assert default_choice([bid(A, 200, 100), bid(B, 100, 100)], NOW).peer == B  # type: ignore[union-attr]


def test_a_much_faster_bid_beats_a_slightly_cheaper_one() -> None:
    # cost: price/cheapest + eta_s: A = 1.0 + 5.0, B = 1.1 + 0.1
    assert default_choice([bid(A, 100, 5000), bid(B, 110, 100)], NOW).peer == B  # type: ignore[union-attr]


def test_reputation_outweighs_a_small_price_difference() -> None:
    # A: 1.0 + 2*(1-0.2) = 2.6, B: 1.05 + 2*(1-0.9) = 1.25
    assert default_choice([bid(A, 100, 0, rep=0.2), bid(B, 105, 0, rep=0.9)], NOW).peer == B  # type: ignore[union-attr]


def test_weights_change_the_winner() -> None:
    bids = [bid(A, 100, 5000), bid(B, 300, 100)]
    assert make_choice(ChoiceWeights(price=1, eta_per_s=1, reputation=0))(bids, NOW).peer == B  # type: ignore[union-attr]
    assert make_choice(ChoiceWeights(price=10, eta_per_s=0, reputation=0))(bids, NOW).peer == A  # type: ignore[union-attr]


def test_ties_are_deterministic_whatever_the_order() -> None:
    bids = [bid(C, 100, 100), bid(A, 100, 100), bid(B, 100, 100)]
    winners = {default_choice(order, NOW).peer for order in (bids, bids[::-1], bids[1:] + bids[:1])}  # type: ignore[union-attr]
    assert winners == {A}
    same_peer = [bid(A, 100, 100, event_id="2" * 64), bid(A, 100, 100, event_id="1" * 64)]
    assert default_choice(same_peer, NOW).event_id == "1" * 64  # type: ignore[union-attr]


def test_open_breaker_and_expired_bids_are_skipped() -> None:
    bids = [bid(A, 10, 0, breaker=NOW + 5), bid(B, 20, 0, expires=NOW), bid(C, 500, 0)]
    assert default_choice(bids, NOW).peer == C  # type: ignore[union-attr]
    assert default_choice(bids[:2], NOW) is None
    assert default_choice(bids[:1], NOW + 6).peer == A  # type: ignore[union-attr]


def peer(pubkey: str, price: int, **over: object) -> PostedPeer:
    fields: dict[str, object] = dict(pubkey=pubkey, price_msat=price, eta_ms=100, fresh=True, max_privacy=2)
    fields.update(over)
    return PostedPeer(**fields)  # type: ignore[arg-type]


def test_posted_price_takes_the_cheapest_fit_peer() -> None:
    peers = [
        peer(A, 10, fresh=False),
        peer(B, 20, backpressure="SATURATED"),
        peer(C, 30, max_privacy=0),
        peer("d" * 64, 40, breaker_until=NOW + 1),
        peer("e" * 64, 2000),
        peer("f" * 64, 60),
        peer("9" * 64, 50, backpressure="BUSY"),
    ]
    assert choose_posted(peers, rfb(privacy=1), NOW).pubkey == "9" * 64  # type: ignore[union-attr]
    assert choose_posted(peers[:5], rfb(privacy=1), NOW) is None
    assert choose_posted(peers[2:3], rfb(privacy=0), NOW).pubkey == C  # type: ignore[union-attr]


def test_posted_price_ties_go_to_lower_eta_then_reputation() -> None:
    peers = [peer(A, 10, eta_ms=300), peer(B, 10, eta_ms=100, reputation=0.4), peer(C, 10, eta_ms=100, reputation=0.8)]
    assert choose_posted(peers, rfb(), NOW).pubkey == C  # type: ignore[union-attr]


def test_reputation_scores_and_breaker() -> None:
    now = [NOW]
    rep = Reputation(failures=3, cooldown_s=60, clock=lambda: now[0])
    assert rep.score(A) == 0.5
    rep.record(A, True)
    rep.record(A, True)
    assert rep.score(A) == pytest.approx(0.75)
    rep.record(B, False)
    rep.record(B, False)
    assert not rep.is_open(B)
    rep.record(B, True)  # a success resets the consecutive count
    rep.record(B, False)
    rep.record(B, False)
    assert not rep.is_open(B)
    rep.record(B, False)
    assert rep.is_open(B) and rep.breaker_until(B) == NOW + 60
    now[0] = NOW + 61
    assert not rep.is_open(B)  # cooled down: half-open
    rep.record(B, False)
    assert rep.is_open(B)  # one more failure re-opens at once
    rep.record(B, True)
    assert not rep.is_open(B)


def test_reputation_is_bounded() -> None:
    rep = Reputation(max_peers=2)
    for key in (A, B, C):
        rep.record(key, True)
    assert rep.score(A) == 0.5 and rep.score(C) == pytest.approx(2 / 3)
