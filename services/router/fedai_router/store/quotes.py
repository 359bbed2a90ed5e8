"""Signed quotes the router issued: price breakdown, the node it was computed for, and an expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class QuoteRow:
    id: str
    request_id: str
    client: str
    model: str
    node: str
    input_tokens: int
    max_output_tokens: int
    input_msat: int
    output_msat: int
    router_fee_msat: int
    total_msat: int
    expires_at: datetime
    router: str = ""
    used_at: datetime | None = None


async def insert_quote(pool: asyncpg.Pool, q: QuoteRow) -> None:
    await pool.execute(
        "INSERT INTO quotes (id, request_id, client, model, node, input_tokens, max_output_tokens, input_msat,"
        " output_msat, router_fee_msat, total_msat, expires_at, router)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        q.id,
        q.request_id,
        q.client,
        q.model,
        q.node,
        q.input_tokens,
        q.max_output_tokens,
        q.input_msat,
        q.output_msat,
        q.router_fee_msat,
        q.total_msat,
        q.expires_at,
        q.router,
    )


async def get_quote(pool: asyncpg.Pool, quote_id: str) -> QuoteRow | None:
    r = await pool.fetchrow(
        "SELECT id, request_id, client, model, node, input_tokens, max_output_tokens, input_msat, output_msat,"
        " router_fee_msat, total_msat, expires_at, router, used_at FROM quotes WHERE id = $1",
        quote_id,
    )
    return QuoteRow(**dict(r)) if r else None


async def use_quote(pool: asyncpg.Pool, quote_id: str, spender: str) -> bool:
    """Mark a quote used by `spender` (a token unique to one request); False if it was already used (quotes are
    single-use: of concurrent spenders, exactly one wins)."""
    row = await pool.fetchrow(
        "UPDATE quotes SET used_at = now(), used_by = $2 WHERE id = $1 AND used_at IS NULL RETURNING id",
        quote_id,
        spender,
    )
    return row is not None


async def release_quote(pool: asyncpg.Pool, quote_id: str, spender: str) -> bool:
    """Give a quote back after no node served the request that spent it. Only its spender can: a request
    that did not spend the quote (or spent it and was released already) changes nothing."""
    row = await pool.fetchrow(
        "UPDATE quotes SET used_at = NULL, used_by = NULL WHERE id = $1 AND used_by = $2 RETURNING id",
        quote_id,
        spender,
    )
    return row is not None
