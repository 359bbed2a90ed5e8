"""The node's admin tables (migrations/0017_node_admin.sql), in NODE_DB_URL: prices per model, router rules and the
drained flag set through the admin API, each change written in one transaction with its audit row; and the
read-only earnings summary from the node's payment claims and refunds (never a preimage or a destination)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from fedai.protocol.messages import Pricing


@dataclass(frozen=True, slots=True)
class NodeAdminSnapshot:
    """What the node applies at start: the admin API's changes so far."""

    prices: dict[str, Pricing] = field(default_factory=dict)
    routers: dict[str, str] = field(default_factory=dict)  # router pubkey -> "allow" | "block"
    drained: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    node: str  # the node's pubkey: every row names it (nodes may share a database)
    actor: str  # the admin's pubkey
    action: str
    target: str


async def load_snapshot(pool: asyncpg.Pool, node: str) -> NodeAdminSnapshot:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        prices = await conn.fetch("SELECT model, input_msat, output_msat FROM node_admin_prices WHERE node = $1", node)
        routers = await conn.fetch("SELECT router, rule FROM node_admin_routers WHERE node = $1", node)
        drained = await conn.fetchval("SELECT drained FROM node_admin_state WHERE node = $1", node)
    return NodeAdminSnapshot(
        prices={r["model"]: Pricing(input_msat=r["input_msat"], output_msat=r["output_msat"]) for r in prices},
        routers={r["router"]: r["rule"] for r in routers},
        drained=bool(drained),
    )


async def _audit(conn: asyncpg.Connection, change: Change, before: Any, after: Any) -> None:
    await conn.execute(
        """INSERT INTO node_admin_audit (node, actor, action, target, before, after)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        change.node,
        change.actor,
        change.action,
        change.target,
        before,
        after,
    )


def _price_doc(row: asyncpg.Record | None) -> dict[str, int] | None:
    return None if row is None else {"input_msat": int(row["input_msat"]), "output_msat": int(row["output_msat"])}


async def set_price(pool: asyncpg.Pool, change: Change, pricing: Pricing | None) -> None:
    """The price of model `change.target`, or None: back to NODE_PRICE_*."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT input_msat, output_msat FROM node_admin_prices WHERE node = $1 AND model = $2 FOR UPDATE",
            change.node,
            change.target,
        )
        if pricing is None:
            await conn.execute(
                "DELETE FROM node_admin_prices WHERE node = $1 AND model = $2", change.node, change.target
            )
            after = None
        else:
            await conn.execute(
                """INSERT INTO node_admin_prices (node, model, input_msat, output_msat) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (node, model) DO UPDATE SET input_msat = $3, output_msat = $4, updated_at = now()""",
                change.node,
                change.target,
                pricing.input_msat,
                pricing.output_msat,
            )
            after = {"input_msat": pricing.input_msat, "output_msat": pricing.output_msat}
        await _audit(conn, change, _price_doc(row), after)


async def set_router(pool: asyncpg.Pool, change: Change, rule: str | None) -> None:
    """Allow or block router `change.target`; None drops the rule (ROUTER_PUBLIC_KEY decides)."""
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(
            "SELECT rule FROM node_admin_routers WHERE node = $1 AND router = $2 FOR UPDATE", change.node, change.target
        )
        if rule is None:
            await conn.execute(
                "DELETE FROM node_admin_routers WHERE node = $1 AND router = $2", change.node, change.target
            )
        else:
            await conn.execute(
                """INSERT INTO node_admin_routers (node, router, rule) VALUES ($1, $2, $3)
                   ON CONFLICT (node, router) DO UPDATE SET rule = $3, updated_at = now()""",
                change.node,
                change.target,
                rule,
            )
        await _audit(conn, change, {"rule": before} if before else None, {"rule": rule} if rule else None)


async def set_drained(pool: asyncpg.Pool, change: Change, drained: bool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval("SELECT drained FROM node_admin_state WHERE node = $1 FOR UPDATE", change.node)
        await conn.execute(
            """INSERT INTO node_admin_state (node, drained) VALUES ($1, $2)
               ON CONFLICT (node) DO UPDATE SET drained = $2, updated_at = now()""",
            change.node,
            drained,
        )
        await _audit(conn, change, {"drained": bool(before)}, {"drained": drained})


def _iso(value: datetime) -> str:
    return value.isoformat()


async def list_audit(
    pool: asyncpg.Pool, node: str, *, limit: int, before: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """This node's audit rows, newest first; the cursor of the next page (None: no more)."""
    rows = await pool.fetch(
        """SELECT id, at, actor, action, target, before, after FROM node_admin_audit
           WHERE node = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3""",
        node,
        before,
        limit + 1,
    )
    items = [
        {
            "id": int(r["id"]),
            "at": _iso(r["at"]),
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "before": r["before"],
            "after": r["after"],
        }
        for r in rows[:limit]
    ]
    return items, (items[-1]["id"] if len(rows) > limit else None)


_CLAIMS = """
SELECT state, count(*) AS n, coalesce(sum(amount_msat), 0) AS msat FROM payment_claims GROUP BY state
"""
_REFUNDS = """
SELECT state, count(*) AS n, coalesce(sum(amount_msat), 0) AS msat FROM refunds WHERE role = 'node' GROUP BY state
"""


async def earnings(pool: asyncpg.Pool) -> dict[str, Any]:
    """What the node was paid (its claims: consumed = served, claimed = serving now, released = to be served again)
    and refunded (unused shares), by state: counts and msat. Never a payment hash, preimage or destination."""
    claims = {r["state"]: {"count": int(r["n"]), "msat": int(r["msat"])} for r in await pool.fetch(_CLAIMS)}
    refunds = {r["state"]: {"count": int(r["n"]), "msat": int(r["msat"])} for r in await pool.fetch(_REFUNDS)}
    zero = {"count": 0, "msat": 0}
    claim_states = {s: claims.get(s, zero) for s in ("consumed", "claimed", "released")}
    refund_states = {s: refunds.get(s, zero) for s in ("paid", "pending", "paying", "failed")}
    earned = claim_states["consumed"]["msat"] - refund_states["paid"]["msat"]
    return {"claims": claim_states, "refunds": refund_states, "earned_msat": earned}
