"""`fedai earnings`: what an operator was paid, by day, from its own database (docs/payments.md#earnings).

Read directly from the operator's Postgres (like `fedai migrate`): whoever can read that database is the
operator, so no endpoint and no token are involved. The query and what each role's rows hold are in
fedai.payments.earnings (shared with the router's GET /admin/api/earnings); the totals are net of refunds paid.

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
from fedai.payments import earnings as store
from fedai.payments.earnings import totals

ENV = {"router": "ROUTER_DB_URL", "node": "NODE_DB_URL"}
__all__ = ["earnings_rows", "earnings_table", "print_totals", "totals"]
ROLES = {"router_fee": "fee (yours)", "node": "node share", "provider": "provider share"}


async def earnings_rows(dsn: str, role: str, days: int) -> list[dict[str, Any]]:
    """The role's rows (fedai.payments.earnings) read over one connection to `dsn`."""
    import asyncpg  # the router and node extras

    conn = await asyncpg.connect(dsn)
    try:
        return await store.earnings_rows(conn, role, days)
    finally:
        await conn.close()


def earnings_table(rows: list[dict[str, Any]], role: str) -> Table:
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
@click.option("--days", type=click.IntRange(1, store.MAX_DAYS), default=30, show_default=True, help="How far back.")
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
    console.print(earnings_table(rows, role))
    print_totals(rows)


def print_totals(rows: list[dict[str, Any]]) -> None:
    """One line per role: its net total and what was refunded."""
    refunded = totals(rows, "refunded_msat")
    for name, msat in sorted(totals(rows).items()):
        console.print(f"total {ROLES.get(name, name)}: {msat} msat net ({refunded[name]} refunded)", highlight=False)
