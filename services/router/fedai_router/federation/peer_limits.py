"""Bounds on what the peer book holds: how many peers, and which one gives way when a new one arrives.

Keys are free, so without a bound every fresh key that announces caps adds a peer for good. At the cap a
newcomer takes the place of a stale peer (nothing it announced is still fresh), the least recently seen first;
with none stale, only a trusted newcomer (followed, or endorsed by a followed key's contact list) displaces the
least recently seen stranger, and anyone else is refused (`full`). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


class _Fresh(Protocol):
    def fresh(self, now: float, ttl_s: float) -> bool: ...


class _Record(Protocol):
    pubkey: str
    last_seen: float
    caps: Any
    status: Any
    prices: dict[str, Any]


def is_stale(record: _Record, now: float, ttl_s: float) -> bool:
    """Nothing the peer announced is still fresh."""
    held: list[_Fresh | None] = [record.caps, record.status, *record.prices.values()]
    return not any(h is not None and h.fresh(now, ttl_s) for h in held)


def room_for(
    records: Iterable[_Record], *, newcomer_trusted: bool, trusted: Callable[[str], bool], now: float, ttl_s: float
) -> str | None:
    """The peer to forget so that a new one fits, or None when the newcomer must be refused."""
    records = list(records)
    stale = [r for r in records if is_stale(r, now, ttl_s)]
    if stale:
        return min(stale, key=lambda r: (r.last_seen, r.pubkey)).pubkey
    if not newcomer_trusted:
        return None
    strangers = [r for r in records if not trusted(r.pubkey)]
    return min(strangers, key=lambda r: (r.last_seen, r.pubkey)).pubkey if strangers else None
