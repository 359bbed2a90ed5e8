"""What this router bids for a peer's RFB: the price and ETA its own nodes can offer, or no bid.

`local_quote` is the default; the bidder takes any `Quote` (tests and the benchmark pass their own).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import PL3_LOCAL, Bid, Rfb
from fedai_router.config import RouterSettings
from fedai_router.pricing import Fees, quote_price
from fedai_router.scheduler import Demand, ModelTable, Policy, rank

RANK_DEPTH = 64  # nodes looked at when counting free capacity for a bid

QuoteResult = Bid | None
Quote = Callable[[Event, Rfb], QuoteResult | Awaitable[QuoteResult]]


def local_quote(
    settings: RouterSettings,
    fees: Fees,
    tables: Mapping[str, ModelTable],
    policy: Policy,
    backpressure: Callable[[], str],
    held: Callable[[str], int] | None = None,
) -> Quote:
    """The default quote: bid what our cheapest fitting node would charge for the whole job plus our fee (the
    one in force when the RFB arrives: `fees` follows the admin API on every replica),
    with that node's latency as the ETA. None (no bid) when the privacy level is above what we accept, the
    router is SATURATED, no fresh node can take the job within the price cap and deadline, or the free
    slots on fitting nodes are all promised to open bids (`held`)."""

    def quote(event: Event, rfb: Rfb) -> Bid | None:
        too_private = rfb.privacy >= PL3_LOCAL or rfb.privacy > settings.max_privacy(rfb.job_type)
        if too_private or backpressure() == "SATURATED":
            return None
        now = time.time()
        demand = Demand(
            model=rfb.model, input_tokens=rfb.input_tokens, max_tokens=rfb.max_tokens, job_type=rfb.job_type
        )
        try:
            candidates = rank(tables.get(rfb.model), demand, now=now, policy=policy, k=RANK_DEPTH)
        except FedaiError:
            return None
        free = sum(max(0, c.node.capacity - c.node.load) for c in candidates)
        if held is not None and held(rfb.model) >= free:
            return None
        offers = []
        for c in candidates:
            price = quote_price(
                c.model.pricing,
                rfb.input_tokens,
                rfb.max_tokens,
                fee_base_msat=fees.base_msat,
                fee_ppm=fees.ppm,
            ).total_msat
            health = c.node.health
            observed = health.latency_ms is not None and health.latency_samples >= policy.min_latency_samples
            latency = health.latency_ms if observed and health.latency_ms is not None else c.model.latency_estimate_ms
            offers.append((price, math.ceil(latency)))
        price, eta = min(offers)
        if price > rfb.max_price_msat or now * 1000 + eta > rfb.deadline_ms:
            return None
        return Bid(rfb=event.id, price_msat=price, eta_ms=eta, capacity_token=secrets.token_hex(16))

    return quote


__all__ = ["RANK_DEPTH", "Quote", "QuoteResult", "local_quote"]
