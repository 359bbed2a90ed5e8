"""What a peer announcement is, and the checks on it that need nothing but the event and the clock (pure): kinds
and their `d` tags, the NIP-40 expiration, the payload schema, and the held form of an accepted one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import CAPS_D, STATUS_D, RouterCaps, RouterPrice, RouterStatus
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Payload, decode_payload
from fedai_router.store import peers as peer_store

P = TypeVar("P", bound=Payload)

KIND_NAMES = {int(Kind.ROUTER_CAPS): "caps", int(Kind.ROUTER_PRICE): "price", int(Kind.ROUTER_STATUS): "status"}
ANNOUNCE_KINDS = sorted(KIND_NAMES)


@dataclass(frozen=True, slots=True)
class Held(Generic[P]):
    """An accepted announcement: its payload and what orders and expires it."""

    event_id: str
    created_at: int
    expires_at: int | None
    payload: P

    def fresh(self, now: float, ttl_s: float) -> bool:
        """Not expired; one without an `expiration` tag counts as fresh for `ttl_s` after `created_at`."""
        if self.expires_at is not None:
            return self.expires_at > now
        return now - self.created_at <= ttl_s


@dataclass(slots=True)
class PeerRecord:
    pubkey: str
    first_seen: float
    last_seen: float
    caps: Held[RouterCaps] | None = None
    prices: dict[str, Held[RouterPrice]] = field(default_factory=dict)
    status: Held[RouterStatus] | None = None

    def held(self, kind: int, d: str) -> Held[Any] | None:
        if kind == Kind.ROUTER_CAPS:
            return self.caps
        if kind == Kind.ROUTER_STATUS:
            return self.status
        return self.prices.get(d)


@dataclass(frozen=True, slots=True)
class Incoming:
    """An announcement that passed every check, ready to store."""

    event: Event
    d: str
    expires_at: int | None
    payload: RouterCaps | RouterPrice | RouterStatus


def too_large(content: str, max_bytes: int) -> bool:
    """Content over `max_bytes`, judged on characters first (cheap), then on its UTF-8 size."""
    return len(content) > max_bytes or len(content.encode("utf-8", "surrogatepass")) > max_bytes


def timing_refusal(event: Event, now: float, skew_s: int) -> str | tuple[str, int | None]:
    """`future`, `expired` or `malformed` (expiration or `d` tag), or the announcement's `d` and expiration."""
    if event.created_at > now + skew_s:
        return "future"
    try:
        expires_at = expiration(event)
    except ValueError:
        return "malformed"
    if expires_at is not None and expires_at <= now:
        return "expired"
    d = event.tag("d")
    if d is None or not d_fits(event.kind, d):
        return "malformed"
    return d, expires_at


def expiration(event: Event) -> int | None:
    """The NIP-40 expiration, or None; raises ValueError when the tag is not an integer."""
    value = event.tag("expiration")
    return None if value is None else int(value)


def d_fits(kind: int, d: str) -> bool:
    if kind == Kind.ROUTER_CAPS:
        return d == CAPS_D
    if kind == Kind.ROUTER_STATUS:
        return d == STATUS_D
    return 0 < len(d) <= 200


def decode_announcement(kind: int, d: str, content: str) -> RouterCaps | RouterPrice | RouterStatus:
    if kind == Kind.ROUTER_CAPS:
        return decode_payload(content, RouterCaps)
    if kind == Kind.ROUTER_STATUS:
        return decode_payload(content, RouterStatus)
    sheet = decode_payload(content, RouterPrice)
    if sheet.job_type != d:
        raise FedaiError(ErrorCode.INVALID_EVENT, "price sheet job_type does not match its d tag")
    return sheet


def held_from_row(row: peer_store.PeerRow, kind: int, d: str, content: Any, cls: type[P]) -> Held[P] | None:
    meta = row.announcements.get(peer_store.announcement_key(kind, d))
    if not isinstance(meta, dict):
        return None
    expires = meta.get("expires_at")
    return Held(
        event_id=str(meta["id"]),
        created_at=int(meta["created_at"]),
        expires_at=int(expires) if expires is not None else None,
        payload=msgspec.convert(content, cls),
    )
