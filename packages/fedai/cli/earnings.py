"""`fedai earnings`: what an operator was paid, by day, from its own database (docs/payments.md#earnings).

Read directly from the operator's Postgres (like `fedai migrate`): whoever can read that database is the
operator, so no endpoint and no token are involved. Each role reports only what its own records prove:

- a **router** (ROUTER_DB_URL): its payees consumed (a proof was shown, every preimage checked, the request
  served), by day and model (the quote's): its own fee invoices (`router_fee`, what it earned) and the shares
  its nodes and providers were paid through its payment requests (money that went to their wallets, not its);
  a quote pruned by retention (ROUTER_QUOTE_RETENTION_S) leaves its payments' model as `?`;
- a **node** (NODE_DB_URL): its own invoices claimed and consumed (`payment_claims`), by day, router and model
  (the model of the request it ran; `?` for claims older than migrations/0015).

Refunds paid back (`refunds`, state `paid`) are subtracted from what the role received into its own wallet: a
router's refunds of its own fee, a node's refunds of its share. `msat` is what was paid in, `refunded` what was
paid back, `net` the difference; the totals are net. A refund still pending or failed is not subtracted (it has
not left the wallet). A router's `node share` rows are never netted: the nodes' refunds are in their databases.

A day is a UTC day of the moment the payment was consumed (the request served).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click
from rich.table import Table

from fedai.cli.extras import needs_extra
from fedai.cli.output import column, console, fail, print_json, short_npub

_ROUTER = """
SELECT to_char(date_trunc('day', p.updated_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
       coalesce(q.model, '?') AS key, '' AS model, p.role, count(*) AS requests, sum(p.amount_msat) AS msat,
       coalesce(sum(f.amount_msat), 0) AS refunded
FROM payment_payees p
JOIN payment_requests r ON r.id = p.request_id
LEFT JOIN quotes q ON q.id = r.quote
LEFT JOIN refunds f ON f.payment_hash = p.payment_hash AND f.role = 'router_fee' AND p.role = 'router_fee'
                   AND f.state = 'paid'
WHERE p.state = 'consumed' AND p.updated_at >= now() - make_interval(days => $1)
GROUP BY 1, 2, 4 ORDER BY 1, 2, 4
"""

_NODE = """
SELECT to_char(date_trunc('day', c.updated_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
       c.router AS key, coalesce(c.model, '?') AS model, 'node' AS role, count(*) AS requests,
       sum(c.amount_msat) AS msat, coalesce(sum(f.amount_msat), 0) AS refunded
FROM payment_claims c
LEFT JOIN refunds f ON f.payment_hash = c.payment_hash AND f.role = 'node' AND f.state = 'paid'
WHERE c.state = 'consumed' AND c.updated_at >= now() - make_interval(days => $1)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

ENV = {"router": "ROUTER_DB_URL", "node": "NODE_DB_URL"}
ROLES = {"router_fee": "fee (yours)", "node": "node share", "provider": "provider share"}


async def earnings_rows(dsn: str, role: str, days: int) -> list[dict[str, Any]]:
    """One row per day, model (router) or router and model (node), and role: requests, msat consumed, msat
    refunded (paid back) and net."""
    import asyncpg  # the router and node extras

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_ROUTER if role == "router" else _NODE, days)
    finally:
        await conn.close()
    return [_row(r, role) for r in rows]


def _row(r: Any, role: str) -> dict[str, Any]:
    msat, refunded = int(r["msat"]), int(r["refunded"])
    row: dict[str, Any] = {"day": r["day"], "key": r["key"], "role": r["role"], "requests": r["requests"]}
    if role == "node":
        row["model"] = r["model"]
    return row | {"msat": msat, "refunded_msat": refunded, "net_msat": msat - refunded}


def totals(rows: list[dict[str, Any]], field: str = "net_msat") -> dict[str, int]:
    """`field` (net by default) summed per role over the rows."""
    out: dict[str, int] = {}
    for row in rows:
        out[row["role"]] = out.get(row["role"], 0) + row[field]
    return out


def _table(rows: list[dict[str, Any]], role: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    table.collapse_padding = True
    column(table, "day (UTC)", no_wrap=True)
    column(table, "model" if role == "router" else "router", overflow="fold")
    if role == "node":
        column(table, "model", overflow="fold")
    column(table, "paid as", no_wrap=True)
    column(table, "requests", justify="right", no_wrap=True)
    column(table, "msat", justify="right", no_wrap=True)
    column(table, "refunded", justify="right", no_wrap=True)
    for row in rows:
        keys = [row["key"]] if role == "router" else [short_npub(row["key"], 8, 4), row["model"]]
        paid_as = ROLES.get(row["role"], row["role"])
        table.add_row(row["day"], *keys, paid_as, str(row["requests"]), str(row["msat"]), str(row["refunded_msat"]))
    return table


def _dsn(role: str, database_url: str | None) -> str:
    for value in (database_url, os.environ.get(ENV[role]), os.environ.get("DATABASE_URL")):
        if value and value.strip():
            return value.strip()
    fail(f"no database: pass --database-url or set {ENV[role]} (the {role}'s own Postgres)", code=2)


@click.command("earnings")
@click.option("--role", type=click.Choice(["router", "node"]), required=True, help="Whose earnings.")
@click.option("--database-url", help="The operator's Postgres (else ROUTER_DB_URL or NODE_DB_URL, DATABASE_URL).")
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True, help="How far back.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (rows and totals).")
@needs_extra("node")
def earnings_cmd(role: str, database_url: str | None, days: int, as_json: bool) -> None:
    """What this router or node was paid, net of its refunds, by day and model (and router, for a node), from
    its own database."""
    try:
        rows = asyncio.run(earnings_rows(_dsn(role, database_url), role, days))
    except (OSError, ValueError) as exc:
        fail(f"cannot read the {role}'s database: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - asyncpg's errors share no base with OS errors; report, don't trace
        fail(f"cannot read the {role}'s database: {type(exc).__name__} (is it migrated? `fedai migrate`)")
    summed = totals(rows)
    if as_json:
        refunded = totals(rows, "refunded_msat")
        print_json({"role": role, "days": days, "rows": rows, "total_msat": summed, "refunded_msat": refunded})
        return
    if not rows:
        console.print(f"nothing consumed in the last {days} day(s)")
        return
    console.print(_table(rows, role))
    refunded = totals(rows, "refunded_msat")
    for name, msat in sorted(summed.items()):
        console.print(f"total {ROLES.get(name, name)}: {msat} msat net ({refunded[name]} refunded)", highlight=False)
