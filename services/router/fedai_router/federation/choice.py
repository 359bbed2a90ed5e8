"""Choosing a winner: pure functions over what the requester knows (bids, price sheets, peer reputation).

Every part of a score is a cost, lower wins: `price` × price / cheapest price, `eta` × ETA in seconds, and
`reputation` × (1 − the peer's smoothed success rate). Ties go to the lower price, then the lower ETA, then
the lower pubkey and event id, so the same bids always give the same winner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedai.protocol.federation import Backpressure, Rfb


@dataclass(frozen=True, slots=True)
class ChoiceWeights:
    price: float = 1.0
    eta_per_s: float = 1.0
    reputation: float = 2.0


@dataclass(frozen=True, slots=True)
class BidView:
    """One verified bid as `choose` sees it."""

    event_id: str
    peer: str
    price_msat: int
    eta_ms: int
    capacity_token: str
    expires_at: float  # unix s (the bid's `expiration`)
    reputation: float = 0.5  # the peer's smoothed success rate, 0..1
    breaker_until: float = 0.0  # the peer's circuit breaker is open until then


@dataclass(frozen=True, slots=True)
class PostedPeer:
    """A peer as its latest announcements describe it, priced for one RFB (for posted-price routing)."""

    pubkey: str
    price_msat: int  # what the RFB's job costs at the peer's posted prices (surge and fee included)
    eta_ms: int  # the peer's posted p95 latency
    fresh: bool  # its caps, price and status announcements are recent enough to trust
    backpressure: Backpressure | str = "NORMAL"
    max_privacy: int = 0
    reputation: float = 0.5
    breaker_until: float = 0.0


Choose = Callable[[list[BidView], float], BidView | None]


def bid_cost(bid: BidView, cheapest: int, weights: ChoiceWeights) -> float:
    return (
        weights.price * bid.price_msat / max(1, cheapest)
        + weights.eta_per_s * bid.eta_ms / 1000
        + weights.reputation * (1.0 - bid.reputation)
    )


def make_choice(weights: ChoiceWeights) -> Choose:
    """A `choose` function with these weights."""

    def choose(bids: list[BidView], now: float) -> BidView | None:
        live = [b for b in bids if b.expires_at > now and b.breaker_until <= now]
        if not live:
            return None
        cheapest = min(b.price_msat for b in live)
        return min(live, key=lambda b: (bid_cost(b, cheapest, weights), b.price_msat, b.eta_ms, b.peer, b.event_id))

    return choose


default_choice: Choose = make_choice(ChoiceWeights())


def choose_posted(peers: Sequence[PostedPeer], rfb: Rfb, now: float) -> PostedPeer | None:
    """Posted-price routing: the cheapest fresh peer that is not saturated, accepts the RFB's privacy level,
    has no open breaker and whose posted price is within the cap (ties: lower ETA, better reputation, pubkey)."""
    fit = [
        p
        for p in peers
        if p.fresh
        and p.backpressure != "SATURATED"
        and p.max_privacy >= rfb.privacy
        and p.breaker_until <= now
        and p.price_msat <= rfb.max_price_msat
    ]
    if not fit:
        return None
    return min(fit, key=lambda p: (p.price_msat, p.eta_ms, -p.reputation, p.pubkey))
