"""The `peers` table: each peer router's latest verified announcements (caps, price sheets, status).

`announcements` (migration 0007) keeps, per `"<kind>:<d>"`, the event id, `created_at` and expiration, so the
latest announcement wins across replicas and restarts (NIP-01 order: later `created_at`, then lower id) and a
reloaded peer's freshness is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

CAPS_KIND = 31020
PRICE_KIND = 31021
STATUS_KIND = 31022


@dataclass(frozen=True, slots=True)
class PeerRow:
    pubkey: str
    caps: Any | None
    prices: dict[str, Any]
    status: Any | None
    announcements: dict[str, Any]
    first_seen: datetime
    updated_at: datetime


def announcement_key(kind: int, d: str) -> str:
    return f"{kind}:{d}"


# ($1 pubkey, $2 content, $3 created_at unix, $4 announcement key, $5 meta, $6 event id, $7 d for prices)
_COLUMNS = {
    CAPS_KIND: ("caps, caps_at", "$2::jsonb, to_timestamp($3)", "caps = EXCLUDED.caps, caps_at = EXCLUDED.caps_at"),
    STATUS_KIND: (
        "status, status_at",
        "$2::jsonb, to_timestamp($3)",
        "status = EXCLUDED.status, status_at = EXCLUDED.status_at",
    ),
    PRICE_KIND: ("prices", "jsonb_build_object($7::text, $2::jsonb)", "prices = p.prices || EXCLUDED.prices"),
}

_UPSERT = """
INSERT INTO peers AS p (pubkey, {columns}, announcements, updated_at)
VALUES ($1, {values}, jsonb_build_object($4::text, $5::jsonb), now())
ON CONFLICT (pubkey) DO UPDATE SET {update}, announcements = p.announcements || EXCLUDED.announcements,
    updated_at = now()
WHERE (NOT (p.announcements ? $4::text)
   OR (p.announcements -> $4::text ->> 'created_at')::bigint < $3::bigint
   OR ((p.announcements -> $4::text ->> 'created_at')::bigint = $3::bigint
       AND (p.announcements -> $4::text ->> 'id') > $6::text)){extra}
RETURNING pubkey
"""
# a price sheet for a new job type only while the peer holds fewer than $8 sheets
_SHEET_BOUND = "\n  AND ((p.prices ? $7::text) OR (SELECT count(*) FROM jsonb_object_keys(p.prices)) < $8::int)"

_QUERIES = {
    kind: _UPSERT.format(
        columns=columns, values=values, update=update, extra=_SHEET_BOUND if kind == PRICE_KIND else ""
    )
    for kind, (columns, values, update) in _COLUMNS.items()
}
MAX_PRICE_SHEETS = 16


async def save_announcement(
    pool: asyncpg.Pool,
    pubkey: str,
    *,
    kind: int,
    d: str,
    content: Any,
    event_id: str,
    created_at: int,
    expires_at: int | None,
    max_price_sheets: int = MAX_PRICE_SHEETS,
) -> bool:
    """Store a verified announcement unless a newer one for the same (peer, kind, d) is already stored, or it is
    a price sheet for a new job type of a peer that already has `max_price_sheets`."""
    key = announcement_key(kind, d)
    meta = {"id": event_id, "created_at": created_at, "expires_at": expires_at}
    args: list[Any] = [pubkey, content, created_at, key, meta, event_id]
    if kind == PRICE_KIND:
        args += [d, max_price_sheets]  # the job type keys the sheet inside `prices`
    row = await pool.fetchrow(_QUERIES[kind], *args)
    return row is not None


async def delete_peers(pool: asyncpg.Pool, pubkeys: list[str]) -> int:
    """Forget these peers (evicted to make room, or stale). Returns how many rows went."""
    result = await pool.execute("DELETE FROM peers WHERE pubkey = ANY($1::text[])", pubkeys)
    return int(result.split()[-1])


async def prune_peers(pool: asyncpg.Pool, idle_s: float) -> int:
    """Forget peers that announced nothing for `idle_s` (a restart would find all of it expired anyway)."""
    result = await pool.execute("DELETE FROM peers WHERE updated_at < now() - make_interval(secs => $1)", idle_s)
    return int(result.split()[-1])


async def load_peers(pool: asyncpg.Pool, limit: int | None = None) -> list[PeerRow]:
    """The stored peers, most recently updated first (at most `limit`)."""
    rows = await pool.fetch(
        "SELECT pubkey, caps, prices, status, announcements, first_seen, updated_at FROM peers"
        " ORDER BY updated_at DESC, pubkey LIMIT $1",
        limit,
    )
    return [
        PeerRow(
            pubkey=r["pubkey"],
            caps=r["caps"],
            prices=r["prices"] or {},
            status=r["status"],
            announcements=r["announcements"] or {},
            first_seen=r["first_seen"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]
