"""The settlements of paid answers as the router saw them (`payment_settlements`, migrations/0015): its own
statement of its fee and the node's signed statement of its share, kept so that `GET /payments/{id}` can show
each payee's refund (docs/payments.md#refunds). One row per paid invoice, written once; no destination."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from fedai.protocol.messages import Settlement

_RECORD = """
INSERT INTO payment_settlements (payment_hash, role, quoted_msat, used_msat, refund_msat, kept_msat)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
ON CONFLICT (payment_hash) DO NOTHING
"""


async def record_settlements(pool: asyncpg.Pool, statements: Sequence[Settlement]) -> None:
    """Keep `statements` (each checked to add up by its signer's rules; a repeated invoice keeps the first)."""
    kept = [s for s in statements if s.used_msat + s.refund_msat + s.kept_msat == s.quoted_msat]
    if not kept:
        return
    await pool.execute(
        _RECORD,
        [s.payment_hash for s in kept],
        [s.role for s in kept],
        [s.quoted_msat for s in kept],
        [s.used_msat for s in kept],
        [s.refund_msat for s in kept],
        [s.kept_msat for s in kept],
    )
