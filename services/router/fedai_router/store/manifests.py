"""Node manifests: the latest signed manifest per node and the trust the router computed from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from fedai.protocol.event import Event


@dataclass(frozen=True, slots=True)
class ManifestTrust:
    pubkey: str
    trust: float
    updated_at: datetime


# NIP-01 replacement order for addressable events: a later created_at wins; on a tie, the lower id.
_UPSERT = """
INSERT INTO node_manifests (pubkey, event_id, manifest, event, trust, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (pubkey) DO UPDATE SET
    event_id = EXCLUDED.event_id, manifest = EXCLUDED.manifest, event = EXCLUDED.event,
    trust = EXCLUDED.trust, created_at = EXCLUDED.created_at, updated_at = now()
WHERE node_manifests.created_at < EXCLUDED.created_at
   OR (node_manifests.created_at = EXCLUDED.created_at AND node_manifests.event_id > EXCLUDED.event_id)
RETURNING updated_at
"""


def _ts(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def supersedes(created_at: int, event_id: str, stored: tuple[int, str] | None) -> bool:
    """Whether an event (created_at, id) replaces the stored one under NIP-01 order. Pure."""
    if stored is None:
        return True
    stored_at, stored_id = stored
    return created_at > stored_at or (created_at == stored_at and event_id < stored_id)


async def stored_order(pool: asyncpg.Pool, pubkey: str) -> tuple[int, str] | None:
    """(created_at, event id) of the node's stored manifest, if any."""
    row = await pool.fetchrow("SELECT created_at, event_id FROM node_manifests WHERE pubkey = $1", pubkey)
    return None if row is None else (int(row["created_at"].timestamp()), row["event_id"])


async def upsert_manifest(pool: asyncpg.Pool, event: Event, manifest: Any, trust: float) -> bool:
    """Store the manifest if it is newer than the stored one; False (nothing written) otherwise."""
    row = await pool.fetchrow(_UPSERT, event.pubkey, event.id, manifest, event.to_dict(), trust, _ts(event.created_at))
    return row is not None


async def load_trust(pool: asyncpg.Pool, since: datetime | None = None) -> list[ManifestTrust]:
    """Every node's manifest trust, or only rows changed after `since` (incremental registry refresh)."""
    query = "SELECT pubkey, trust, updated_at FROM node_manifests"
    rows = await (pool.fetch(query + " WHERE updated_at > $1", since) if since else pool.fetch(query))
    return [ManifestTrust(r["pubkey"], r["trust"], r["updated_at"]) for r in rows]


async def get_manifest(pool: asyncpg.Pool, pubkey: str) -> dict[str, Any] | None:
    """The stored row as a dict (manifest, event, trust, created_at), for operators and tests."""
    row = await pool.fetchrow(
        "SELECT pubkey, event_id, manifest, event, trust, created_at, updated_at FROM node_manifests WHERE pubkey = $1",
        pubkey,
    )
    return None if row is None else dict(row)
