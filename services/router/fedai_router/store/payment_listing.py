"""Payment requests as an operator reads them (GET /admin/api/payments, the dashboard's payments page;
runbooks/admin.md), and the refund view of one payee shared with GET /payments/{id}.

What is listed: each request's id, client, quote and the quote's model, state, times and total, and per payee its
role, pubkey, amount, payment hash, state and refund. Never an invoice (bolt11), a preimage (the router keeps
none: a proof's preimages are checked and dropped) or a refund's destination or invoice: the queries select none
of those columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from fedai_router.store.pages import cursor_args, split_page

REQUEST_STATES = ("issued", "consumed", "expired")

_REQUESTS = """
SELECT r.id, r.client, r.quote, r.state, r.created_at, r.expires_at, q.model
FROM payment_requests r LEFT JOIN quotes q ON q.id = r.quote
WHERE ($1::text IS NULL OR r.state = $1) AND ($2::timestamptz IS NULL OR (r.created_at, r.id) < ($2, $3))
ORDER BY r.created_at DESC, r.id DESC LIMIT $4
"""

_PAYEES = """
SELECT p.request_id, p.role, p.payee, p.amount_msat, p.payment_hash, p.state, p.updated_at,
       s.used_msat, s.refund_msat, s.kept_msat, f.state AS refund_state, f.amount_msat AS refund_amount
FROM payment_payees p
LEFT JOIN payment_settlements s ON s.payment_hash = p.payment_hash AND s.role = p.role
LEFT JOIN refunds f ON f.payment_hash = p.payment_hash AND f.role = p.role
WHERE p.request_id = ANY($1::text[]) ORDER BY p.request_id, p.role, p.payment_hash
"""


def refund_view(p: asyncpg.Record) -> dict[str, Any] | None:
    """A payee's refund (docs/payments.md#refunds): what it stated it used, refunds and keeps of its share, and the
    refund's state: `pending`, `paying`, `paid`, `failed` when this router's database holds the refund (its own
    fee's, always), `stated` when it holds only the payee's signed promise (a node pays its refunds from its own
    wallet and records them in its own database), `none` when nothing is owed. Never the destination. `p` has
    used_msat, refund_msat, kept_msat (the settlement) and refund_state, refund_amount (the refund row)."""
    if p["used_msat"] is None and p["refund_state"] is None:
        return None  # not answered yet, or answered before settlements were kept
    refund = int(p["refund_amount"]) if p["refund_amount"] is not None else int(p["refund_msat"] or 0)
    state = p["refund_state"] or ("stated" if refund else "none")
    return {
        "state": state,
        "refund_msat": refund,
        "refunded_msat": refund if state == "paid" else 0,
        "used_msat": None if p["used_msat"] is None else int(p["used_msat"]),
        "kept_msat": None if p["kept_msat"] is None else int(p["kept_msat"]),
    }


def _payee(p: asyncpg.Record) -> dict[str, Any]:
    return {
        "role": p["role"],
        "payee": p["payee"],
        "amount_msat": int(p["amount_msat"]),
        "payment_hash": p["payment_hash"],
        "state": p["state"],
        "updated_at": p["updated_at"].isoformat(),
        "refund": refund_view(p),
    }


async def list_payments(
    pool: asyncpg.Pool, *, limit: int, before: tuple[datetime, str] | None, state: str | None
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """Payment requests newest first (only those in `state` if given), each with its payees; the cursor is the
    last row's (created_at, id) when there are more. `refunded_msat` sums the refunds paid back from this
    router's database (its fee's; a node's own refunds are in the node's)."""
    assert state is None or state in REQUEST_STATES
    rows = await pool.fetch(_REQUESTS, state, *cursor_args(before), limit + 1)
    page, cursor = split_page(rows, limit, "id")
    payees: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in page}
    for p in await pool.fetch(_PAYEES, list(payees)) if page else []:
        payees[p["request_id"]].append(_payee(p))
    items = []
    for r in page:
        listed = payees[r["id"]]
        refunds = [p["refund"] for p in listed if p["refund"]]
        items.append(
            {
                "id": r["id"],
                "client": r["client"],
                "quote": r["quote"],
                "model": r["model"],  # None once retention pruned the quote
                "state": r["state"],
                "created_at": r["created_at"].isoformat(),
                "expires_at": r["expires_at"].isoformat(),
                "total_msat": sum(p["amount_msat"] for p in listed),
                "refunded_msat": sum(f["refunded_msat"] for f in refunds),
                "payees": listed,
            }
        )
    return items, cursor
