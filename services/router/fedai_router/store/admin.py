"""The admin tables (migrations/0013_admin.sql): operators' run-time changes, each written in one transaction
with its audit row, and what every replica loads from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from fedai_router.store.pages import cursor_args, split_page

NodeFlag = str  # "drained" | "banned"
PeerState = str  # "allow" | "block" | "mute"


@dataclass(frozen=True, slots=True)
class AdminSnapshot:
    """Everything a replica applies: loaded as a whole whenever the audit log moved."""

    mark: int  # max(admin_audit.id) when loaded (0: no change ever)
    drained: frozenset[str] = frozenset()
    banned: frozenset[str] = frozenset()
    peers: dict[str, PeerState] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)  # sha256 hex -> client pubkey (not revoked)
    settings: dict[str, int] = field(default_factory=dict)  # fee_base_msat, fee_ppm


@dataclass(frozen=True, slots=True)
class Change:
    actor: str  # the operator's pubkey
    action: str
    target: str


async def audit_mark(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval("SELECT coalesce(max(id), 0) FROM admin_audit")
    return int(value)


async def load_snapshot(pool: asyncpg.Pool) -> AdminSnapshot:
    """One consistent read of every admin table (a repeatable-read transaction)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        mark = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM admin_audit"))
        nodes = await conn.fetch("SELECT pubkey, drained, banned FROM admin_nodes")
        peers = await conn.fetch("SELECT pubkey, state FROM admin_peers")
        keys = await conn.fetch("SELECT sha256, client FROM admin_api_keys WHERE revoked_at IS NULL")
        settings = await conn.fetch("SELECT name, value FROM admin_settings")
    return AdminSnapshot(
        mark=mark,
        drained=frozenset(r["pubkey"] for r in nodes if r["drained"]),
        banned=frozenset(r["pubkey"] for r in nodes if r["banned"]),
        peers={r["pubkey"]: r["state"] for r in peers},
        api_keys={r["sha256"]: r["client"] for r in keys},
        settings={r["name"]: int(r["value"]) for r in settings},
    )


async def _audit(conn: asyncpg.Connection, change: Change, before: Any, after: Any) -> int:
    value = await conn.fetchval(
        "INSERT INTO admin_audit (actor, action, target, before, after) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        change.actor,
        change.action,
        change.target,
        before,
        after,
    )
    return int(value)


async def set_node_flag(pool: asyncpg.Pool, change: Change, flag: NodeFlag, value: bool) -> dict[str, bool]:
    """Set `drained` or `banned` of node `change.target`; returns its flags after the change."""
    assert flag in ("drained", "banned")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT drained, banned FROM admin_nodes WHERE pubkey = $1 FOR UPDATE", change.target)
        before = {"drained": bool(row["drained"]), "banned": bool(row["banned"])} if row else None
        after = dict(before or {"drained": False, "banned": False})
        after[flag] = value
        await conn.execute(
            """INSERT INTO admin_nodes (pubkey, drained, banned) VALUES ($1, $2, $3)
               ON CONFLICT (pubkey) DO UPDATE SET drained = $2, banned = $3, updated_at = now()""",
            change.target,
            after["drained"],
            after["banned"],
        )
        await _audit(conn, change, before, after)
    return after


async def set_peer(pool: asyncpg.Pool, change: Change, state: PeerState | None) -> None:
    """Allow, block or mute peer `change.target`; None clears the operator's rule (the environment's applies)."""
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval("SELECT state FROM admin_peers WHERE pubkey = $1 FOR UPDATE", change.target)
        if state is None:
            await conn.execute("DELETE FROM admin_peers WHERE pubkey = $1", change.target)
        else:
            await conn.execute(
                """INSERT INTO admin_peers (pubkey, state) VALUES ($1, $2)
                   ON CONFLICT (pubkey) DO UPDATE SET state = $2, updated_at = now()""",
                change.target,
                state,
            )
        await _audit(conn, change, {"state": before} if before else None, {"state": state} if state else None)


async def create_api_key(pool: asyncpg.Pool, change: Change, *, digest: str, client: str, label: str) -> None:
    """Store a new key's sha256 under its public id (`change.target`); the key itself is never stored."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO admin_api_keys (sha256, id, client, label) VALUES ($1, $2, $3, $4)",
            digest,
            change.target,
            client,
            label,
        )
        await _audit(conn, change, None, {"client": client, "label": label})


async def revoke_api_key(pool: asyncpg.Pool, change: Change) -> bool:
    """Revoke key `change.target` (its id); False if there is no such live key."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE admin_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING client, label",
            change.target,
        )
        if row is None:
            return False
        await _audit(conn, change, {"client": row["client"], "label": row["label"]}, {"revoked": True})
    return True


async def list_api_keys(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, client, label, created_at, revoked_at FROM admin_api_keys ORDER BY created_at DESC LIMIT 1000"
    )
    return [
        {
            "id": r["id"],
            "client": r["client"],
            "label": r["label"],
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
        }
        for r in rows
    ]


async def set_settings(pool: asyncpg.Pool, change: Change, values: dict[str, int | None]) -> dict[str, int]:
    """Set (an int) or clear (None: back to the environment's) run-time settings; returns those now stored."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT name, value FROM admin_settings FOR UPDATE")
        before = {r["name"]: int(r["value"]) for r in rows}
        for name, value in values.items():
            if value is None:
                await conn.execute("DELETE FROM admin_settings WHERE name = $1", name)
            else:
                await conn.execute(
                    """INSERT INTO admin_settings (name, value) VALUES ($1, $2)
                       ON CONFLICT (name) DO UPDATE SET value = $2, updated_at = now()""",
                    name,
                    value,
                )
        after = {k: v for k, v in {**before, **values}.items() if v is not None}
        await _audit(conn, change, before or None, after or None)
    return after


def _page(rows: list[asyncpg.Record], limit: int) -> tuple[list[asyncpg.Record], int | None]:
    return rows[:limit], (int(rows[limit - 1]["cursor"]) if len(rows) > limit else None)


async def list_audit(pool: asyncpg.Pool, *, limit: int, before: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; `before` is the `next` cursor of the previous page."""
    rows = await pool.fetch(
        """SELECT id AS cursor, at, actor, action, target, before, after FROM admin_audit
           WHERE $1::bigint IS NULL OR id < $1 ORDER BY id DESC LIMIT $2""",
        before,
        limit + 1,
    )
    page, cursor = _page(rows, limit)
    items = [
        {
            "id": int(r["cursor"]),
            "at": r["at"].isoformat(),
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "before": r["before"],
            "after": r["after"],
        }
        for r in page
    ]
    return items, cursor


async def list_metering(
    pool: asyncpg.Pool, *, limit: int, before: tuple[datetime, str] | None
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """Recent verified metering records, newest first: who, which node and model, tokens, time, price. Never a
    prompt or an output (the table holds neither; its signed event is not returned either)."""
    rows = await pool.fetch(
        """SELECT request_id, client, node, model, input_tokens, output_tokens, wall_ms, price_msat, attempt,
                  created_at FROM metering_records
           WHERE $1::timestamptz IS NULL OR (created_at, request_id) < ($1, $2)
           ORDER BY created_at DESC, request_id DESC LIMIT $3""",
        *cursor_args(before),
        limit + 1,
    )
    page, cursor = split_page(rows, limit, "request_id")
    items = [
        {
            "request_id": r["request_id"],
            "client": r["client"],
            "node": r["node"],
            "model": r["model"],
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "wall_ms": round(float(r["wall_ms"]), 1),
            "price_msat": int(r["price_msat"]),
            "attempt": r["attempt"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in page
    ]
    return items, cursor


async def traffic_by_minute(pool: asyncpg.Pool, minutes: int = 60) -> list[tuple[int, float | None]]:
    """Served requests and their mean wall time (ms) for each of the last `minutes` minutes, oldest first."""
    rows = await pool.fetch(
        """SELECT floor(extract(epoch FROM now() - created_at) / 60)::int AS ago, count(*) AS n, avg(wall_ms) AS ms
           FROM metering_records WHERE created_at > now() - make_interval(mins => $1) GROUP BY 1""",
        minutes,
    )
    by_ago = {int(r["ago"]): (int(r["n"]), float(r["ms"])) for r in rows}
    return [by_ago.get(ago, (0, None)) for ago in range(minutes - 1, -1, -1)]


async def list_receipts(
    pool: asyncpg.Pool, *, limit: int, before: tuple[datetime, str] | None
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """Federation jobs, newest first: role (requester: we offloaded; provider: we served a peer), peer, price,
    privacy, status, and the id of the provider-signed receipt if one came. Never the job or the receipt body."""
    rows = await pool.fetch(
        """SELECT job_id, role, peer, price_msat, privacy, status, receipt->>'id' AS receipt_id, created_at,
                  updated_at FROM federation_jobs
           WHERE $1::timestamptz IS NULL OR (created_at, job_id) < ($1, $2)
           ORDER BY created_at DESC, job_id DESC LIMIT $3""",
        *cursor_args(before),
        limit + 1,
    )
    page, cursor = split_page(rows, limit, "job_id")
    items = [
        {
            "job_id": r["job_id"],
            "role": r["role"],
            "peer": r["peer"],
            "price_msat": int(r["price_msat"]),
            "privacy": r["privacy"],
            "status": r["status"],
            "receipt_id": r["receipt_id"],
            "created_at": r["created_at"].isoformat(),
            "updated_at": r["updated_at"].isoformat(),
        }
        for r in page
    ]
    return items, cursor
