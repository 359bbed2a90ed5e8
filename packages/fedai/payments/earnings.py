"""What an operator was paid, by UTC day (docs/payments.md#earnings): the one query behind `fedai earnings` (read
from the operator's database) and the router's GET /admin/api/earnings (runbooks/admin.md).

Each role reports only what its own records prove:

- a **router**: its payees consumed (a proof was shown, every preimage checked, the request served), by day and
  model (the quote's): its own fee invoices (`router_fee`, what it earned) and the shares its nodes and providers
  were paid through its payment requests (money that went to their wallets, not its); a quote pruned by retention
  (ROUTER_QUOTE_RETENTION_S) leaves its payments' model as `?`;
- a **node**: its own invoices claimed and consumed (`payment_claims`), by day, router and model (the model of the
  request it ran; `?` for claims older than migrations/0015).

Refunds paid back (`refunds`, state `paid`) are subtracted from what the role received into its own wallet: a
router's refunds of its own fee, a node's refunds of its share. `msat` is what was paid in, `refunded_msat` what
was paid back, `net_msat` the difference. A refund still pending or failed is not subtracted (it has not left the
wallet). A router's `node` and `provider` rows are never netted: the nodes' refunds are in their databases.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the light client (`fedai admin earnings`) imports this module without asyncpg
    import asyncpg

MAX_DAYS = 3660
ROLES = ("router", "node")

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


async def earnings_rows(db: asyncpg.Pool | asyncpg.Connection, role: str, days: int) -> list[dict[str, Any]]:
    """One row per day, model (router) or router and model (node), and role (`router_fee`, `node`, `provider`):
    requests, msat consumed, msat refunded (paid back) and net, oldest day first. `key` is the model for a
    router, the router's pubkey for a node."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    rows = await db.fetch(_ROUTER if role == "router" else _NODE, days)
    return [_row(r, role) for r in rows]


def _row(r: Any, role: str) -> dict[str, Any]:
    msat, refunded = int(r["msat"]), int(r["refunded"])
    row: dict[str, Any] = {"day": r["day"], "key": r["key"], "role": r["role"], "requests": int(r["requests"])}
    if role == "node":
        row["model"] = r["model"]
    return row | {"msat": msat, "refunded_msat": refunded, "net_msat": msat - refunded}


def totals(rows: list[dict[str, Any]], field: str = "net_msat") -> dict[str, int]:
    """`field` (net by default) summed per role over the rows."""
    out: dict[str, int] = {}
    for row in rows:
        out[row["role"]] = out.get(row["role"], 0) + row[field]
    return out


def daily(rows: list[dict[str, Any]], role: str, days: int, today: date) -> list[tuple[str, int]]:
    """Net msat of `role` for each of the `days` UTC days up to `today`, oldest first (0 for a day without
    payments): the series an earnings chart draws."""
    by_day: dict[str, int] = {}
    for row in rows:
        if row["role"] == role:
            by_day[row["day"]] = by_day.get(row["day"], 0) + row["net_msat"]
    series = ((today - timedelta(days=ago)).isoformat() for ago in range(days - 1, -1, -1))
    return [(day, by_day.get(day, 0)) for day in series]
