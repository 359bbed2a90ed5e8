"""The peer book's rows in `peers` (the latest announcement wins there too): an accepted announcement written,
forgotten peers deleted, and stored peers read back at start. A database hiccup is logged, never raised: memory
still learns the announcement and the next one (or the next prune) retries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg
import msgspec

from fedai.protocol.federation import CAPS_D, STATUS_D, RouterCaps, RouterPrice, RouterStatus
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import to_builtins
from fedai_router.federation.announcements import Incoming, PeerRecord, held_from_row
from fedai_router.store import peers as peer_store

log = logging.getLogger("fedai.router.peers")


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


async def save_incoming(pool: asyncpg.Pool, incoming: Incoming, max_price_sheets: int) -> None:
    event = incoming.event
    try:
        await peer_store.save_announcement(
            pool,
            event.pubkey,
            kind=event.kind,
            d=incoming.d,
            content=to_builtins(incoming.payload),
            event_id=event.id,
            created_at=event.created_at,
            expires_at=incoming.expires_at,
            max_price_sheets=max_price_sheets,
        )
    except (OSError, asyncpg.PostgresError) as exc:  # memory still learns it; the next announcement retries
        log.warning(
            "storing a peer announcement failed", extra={"peer": event.pubkey[:16], "error": type(exc).__name__}
        )


async def forget_peers(pool: asyncpg.Pool, keys: list[str]) -> None:
    try:
        await peer_store.delete_peers(pool, keys)
    except (OSError, asyncpg.PostgresError) as exc:  # the next prune removes them from the table
        log.warning("forgetting peers failed", extra={"peers": len(keys), "error": type(exc).__name__})


def record_from_row(
    row: peer_store.PeerRow, max_price_sheets: int, endpoint_fits: Callable[[str], bool]
) -> PeerRecord | None:
    """A stored peer as the book holds it, or None (logged) when the row no longer decodes. Caps whose endpoint
    does not fit (stored before the rule, or under ROUTER_ALLOW_PRIVATE_ENDPOINTS) are dropped."""
    record = PeerRecord(row.pubkey, first_seen=_ts(row.first_seen), last_seen=_ts(row.updated_at))
    try:
        if row.caps is not None:
            record.caps = held_from_row(row, Kind.ROUTER_CAPS, CAPS_D, row.caps, RouterCaps)
            if record.caps is not None and not endpoint_fits(record.caps.payload.endpoint):
                record.caps = None
        if row.status is not None:
            record.status = held_from_row(row, Kind.ROUTER_STATUS, STATUS_D, row.status, RouterStatus)
        for job_type, sheet in list(row.prices.items())[:max_price_sheets]:
            price = held_from_row(row, Kind.ROUTER_PRICE, job_type, sheet, RouterPrice)
            if price is not None:
                record.prices[job_type] = price
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        log.warning("skipping a stored peer", extra={"peer": row.pubkey[:16], "error": type(exc).__name__})
        return None
    return record
