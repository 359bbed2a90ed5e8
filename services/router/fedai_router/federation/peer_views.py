"""How the auction and the operators see a peer: a `PeerView` of a peer that can take a job now, its posted
`PeerPrice` for one model, and its summary for `GET /federation/peers` (pure, over a held `PeerRecord`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedai.protocol.federation import RouterCaps, RouterStatus
from fedai.protocol.messages import to_builtins
from fedai_router.federation.announcements import PeerRecord
from fedai_router.federation.policy import PeerPolicy


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer that can take a job now, as the auction sees it."""

    pubkey: str
    endpoint: str
    caps: RouterCaps
    status: RouterStatus | None  # None when it has no fresh status
    last_seen: float  # unix seconds of its latest accepted announcement
    followed: bool  # listed in ROUTER_FOLLOW
    endorsements: int  # how many followed keys list it in their contact list

    @property
    def backpressure(self) -> str:
        return self.status.backpressure if self.status is not None else "NORMAL"

    @property
    def p95_latency_ms(self) -> float | None:
        return self.status.p95_latency_ms if self.status is not None else None


@dataclass(frozen=True, slots=True)
class PeerPrice:
    """A peer's posted price for one model and job type: per 1k tokens, fee and surge included."""

    input_msat: int
    output_msat: int
    base_msat: int  # per job
    surge: float

    def cost(self, input_tokens: int, max_tokens: int) -> int:
        """The most a job of this size costs at this price (each part rounded up to a whole msat)."""
        return (
            self.base_msat
            + math.ceil(input_tokens * self.input_msat / 1000)
            + math.ceil(max_tokens * self.output_msat / 1000)
        )


def view_of(record: PeerRecord, now: float, ttl_s: float, policy: PeerPolicy) -> PeerView | None:
    """The peer as the auction sees it, if its caps are fresh."""
    caps = record.caps
    if caps is None or not caps.fresh(now, ttl_s):
        return None
    status = record.status
    return PeerView(
        pubkey=record.pubkey,
        endpoint=caps.payload.endpoint,
        caps=caps.payload,
        status=status.payload if status is not None and status.fresh(now, ttl_s) else None,
        last_seen=record.last_seen,
        followed=policy.followed(record.pubkey),
        endorsements=policy.endorsements(record.pubkey),
    )


def price_of(record: PeerRecord, model: str, job_type: str, now: float, ttl_s: float) -> PeerPrice | None:
    """The peer's posted per-1k price for `model`, if its fresh caps and price sheet for `job_type` list it."""
    caps, sheet = record.caps, record.prices.get(job_type)
    if caps is None or sheet is None or not caps.fresh(now, ttl_s) or not sheet.fresh(now, ttl_s):
        return None
    if model not in caps.payload.models or job_type not in caps.payload.job_types:
        return None
    prices = sheet.payload
    for entry in prices.models:
        if entry.model == model:
            return PeerPrice(
                input_msat=math.ceil(entry.input_msat * prices.surge),
                output_msat=math.ceil(entry.output_msat * prices.surge),
                base_msat=prices.base_msat,
                surge=prices.surge,
            )
    return None


def summary_of(
    record: PeerRecord, status: RouterStatus | None, now: float, ttl_s: float, policy: PeerPolicy, *, detail: bool
) -> dict[str, Any]:
    """A known peer for operators (`status`: its fresh status, if any); the short form for `/status`."""
    caps = record.caps.payload if record.caps is not None else None
    fresh = record.caps is not None and record.caps.fresh(now, ttl_s)
    summary: dict[str, Any] = {
        "pubkey": record.pubkey,
        "policy": policy.state(record.pubkey),
        "fresh": fresh,
        "backpressure": status.backpressure if status is not None else None,
        "last_seen_s": round(now - record.last_seen, 1),
    }
    if not detail:
        summary["models"] = len(caps.models) if caps is not None else 0
        return summary
    summary.update(
        {
            "caps": {
                "endpoint": caps.endpoint,
                "job_types": caps.job_types,
                "models": caps.models,
                "max_privacy": caps.max_privacy,
                "settlement": caps.settlement,
                "limits": to_builtins(caps.limits),
                "software_version": caps.software_version,
            }
            if caps is not None
            else None,
            "prices": {
                job_type: {**to_builtins(held.payload), "fresh": held.fresh(now, ttl_s)}
                for job_type, held in sorted(record.prices.items())
            },
            "status": to_builtins(status) if status is not None else None,
            "first_seen": round(record.first_seen, 3),
            "last_seen": round(record.last_seen, 3),
            "followed": policy.followed(record.pubkey),
            "endorsements": policy.endorsements(record.pubkey),
        }
    )
    return summary
