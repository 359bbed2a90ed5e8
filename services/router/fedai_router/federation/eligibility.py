"""Who may win an award: a peer must have announced, in caps that are still fresh, the RFB's model and job type
at its privacy level and an endpoint of a valid shape, Lightning settlement when we are a paying router, and
(when `ROUTER_FED_MIN_REPUTATION` is set) a good enough record with us. Without this, any fresh key could win
with a 0 bid and no caps or endpoint at all. Web-of-trust and allow/block lists are the peer policy's part
(`choosable`), checked before this.
"""

from __future__ import annotations

from fedai.protocol.errors import FedaiError
from fedai.protocol.federation import Rfb
from fedai_router.endpoints import parse_endpoint
from fedai_router.federation.peers import PeerBook


def choosable(book: PeerBook, pubkey: str) -> bool:
    """The peer policy lets us work with `pubkey` (not blocked, not muted, allowed, trusted enough)."""
    return book.policy_state(pubkey) == "ok"


def award_refusal(
    book: PeerBook,
    peer: str,
    rfb: Rfb,
    *,
    reputation: float,
    min_reputation: float,
    now: float,
    settlement: str | None = None,
) -> str | None:
    """Why `peer` may not win an award for `rfb` (a metric label), or None when it may. Pure over the book."""
    view = book.view(peer, now)
    if view is None:
        return "no_caps"  # no caps, or none still fresh
    caps = view.caps
    if rfb.model not in caps.models or rfb.job_type not in caps.job_types or caps.max_privacy < rfb.privacy:
        return "no_caps"
    try:
        parse_endpoint(caps.endpoint)
    except FedaiError:
        return "bad_endpoint"
    if settlement is not None and settlement not in caps.settlement:
        return "no_settlement"  # a paying requester awards only peers that accept its settlement (Lightning)
    if reputation < min_reputation:
        return "low_reputation"
    return None
