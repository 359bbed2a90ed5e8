"""The node registry's table: descriptors from signed heartbeats and relay announcements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from fedai.protocol.messages import NodeDescriptor, to_builtins


@dataclass(frozen=True, slots=True)
class NodeRow:
    pubkey: str
    descriptor: NodeDescriptor
    verified: bool
    source: str
    last_heartbeat: datetime | None
    last_announce: datetime | None
    updated_at: datetime


_UPSERT_HEARTBEAT = """
INSERT INTO nodes (pubkey, endpoint, descriptor, verified, source, last_heartbeat, updated_at)
VALUES ($1, $2, $3, true, 'heartbeat', now(), now())
ON CONFLICT (pubkey) DO UPDATE SET
    endpoint = EXCLUDED.endpoint, descriptor = EXCLUDED.descriptor, verified = true,
    source = 'heartbeat', last_heartbeat = now(), updated_at = now()
RETURNING updated_at
"""

# An announcement never overrides what a signed heartbeat told us more recently; it may add a node.
_UPSERT_ANNOUNCE = """
INSERT INTO nodes (pubkey, endpoint, descriptor, verified, source, last_announce, updated_at)
VALUES ($1, $2, $3, false, 'announce', now(), now())
ON CONFLICT (pubkey) DO UPDATE SET
    endpoint = EXCLUDED.endpoint, descriptor = EXCLUDED.descriptor,
    verified = nodes.verified AND nodes.endpoint = EXCLUDED.endpoint,
    last_announce = now(), updated_at = now()
WHERE nodes.source = 'announce'
RETURNING updated_at
"""


async def upsert_heartbeat(pool: asyncpg.Pool, pubkey: str, descriptor: NodeDescriptor) -> None:
    await pool.execute(_UPSERT_HEARTBEAT, pubkey, descriptor.endpoint, to_builtins(descriptor))


async def upsert_announce(pool: asyncpg.Pool, pubkey: str, descriptor: NodeDescriptor) -> bool:
    """Record a relay announcement; False when a heartbeat-registered node already holds the row."""
    row = await pool.fetchrow(_UPSERT_ANNOUNCE, pubkey, descriptor.endpoint, to_builtins(descriptor))
    return row is not None


async def mark_verified(pool: asyncpg.Pool, pubkey: str) -> None:
    await pool.execute("UPDATE nodes SET verified = true WHERE pubkey = $1 AND NOT verified", pubkey)


async def load_nodes(
    pool: asyncpg.Pool, since: datetime | None = None, seen_within_s: float | None = None
) -> list[NodeRow]:
    """All nodes, or those changed after `since` (for incremental registry refresh); only those heard from within
    `seen_within_s` if given. Verified and recently seen nodes first, so a bounded registry keeps those."""
    query = "SELECT pubkey, descriptor, verified, source, last_heartbeat, last_announce, updated_at FROM nodes"
    query += " WHERE ($1::float8 IS NULL"
    query += " OR greatest(last_heartbeat, last_announce) > now() - make_interval(secs => $1))"
    args: list[object] = [seen_within_s]
    if since is not None:  # a separate condition, so the incremental load uses the index on updated_at
        query += " AND updated_at > $2"
        args.append(since)
    rows = await pool.fetch(query + " ORDER BY verified DESC, updated_at DESC", *args)
    return [
        NodeRow(
            pubkey=r["pubkey"],
            descriptor=msgspec.convert(r["descriptor"], NodeDescriptor),
            verified=r["verified"],
            source=r["source"],
            last_heartbeat=r["last_heartbeat"],
            last_announce=r["last_announce"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]
