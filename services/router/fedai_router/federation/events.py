"""What both sides of an auction share: the metric, the relay filters, the checks every auction event gets, and
the job terms an RFB sets."""

from __future__ import annotations

import weakref
from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter

from fedai.protocol.envelope import check_event
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Rfb
from fedai_router.store.federation import JobTerms

_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def auction_events(registry: CollectorRegistry) -> Counter:
    """`fedai_router_auction_events_total{kind,result}` in `registry` (created once per registry)."""
    counter = _COUNTERS.get(registry)
    if counter is None:
        counter = _COUNTERS[registry] = Counter(
            "fedai_router_auction_events",
            "Auction messages sent and received (rfb, bid, award, cancel), by result",
            ["kind", "result"],
            registry=registry,
        )
    return counter


def terms_of(rfb: Rfb) -> JobTerms:
    """What an RFB asked for; a job submitted for the award must match it."""
    return JobTerms(
        job_type=rfb.job_type,
        model=rfb.model,
        input_tokens=rfb.input_tokens,
        max_tokens=rfb.max_tokens,
        job_hash=rfb.job_hash,
        deadline_ms=rfb.deadline_ms,
    )


def expiration_of(event: Event) -> int:
    """The NIP-40 `expiration` every auction event must carry (unix s)."""
    value = event.tag("expiration")
    if value is None:
        raise FedaiError(ErrorCode.INVALID_EVENT, "auction events carry an expiration tag")
    try:
        return int(value)
    except ValueError:
        raise FedaiError(ErrorCode.INVALID_EVENT, "expiration tag is not an integer") from None


def check_auction_event(
    event: Event,
    kind: int,
    *,
    recipient: str | None,
    skew_s: int,
    now: float,
    reply_to: str | None = None,
    signers: Collection[str] | None = None,
) -> int:
    """Every envelope rule (kind, freshness, expiry, `p`, `e`, signature) plus a required expiration; returns it."""
    expires = expiration_of(event)
    check_event(event, kinds=(kind,), recipient=recipient, signers=signers, reply_to=reply_to, skew_s=skew_s, now=now)
    return expires


def reason(err: FedaiError) -> str:
    """A metric label for a refused event."""
    return err.code.value
