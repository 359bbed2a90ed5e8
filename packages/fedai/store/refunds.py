"""Refunds of unused shares (`refunds`; docs/payments.md#protocol-and-claims), shared by the router (its fee) and
the node (its work), each paying from its own wallet.

A refund is opened once per paid invoice; a worker holds it while paying (`begin`: one conditional UPDATE, so of
concurrent workers one gets it); the destination's invoice is recorded before the first payment and every retry
pays that same invoice, which Lightning cannot settle twice. The destination is returned to the worker and never
logged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

MAX_ERROR_CHARS = 500

_OPEN = """
INSERT INTO refunds (payment_hash, role, amount_msat, destination, idempotency_key) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (payment_hash) DO NOTHING
RETURNING id
"""

_BEGIN = """
UPDATE refunds SET state = 'paying', claimed_by = $2, claimed_at = now(), attempts = attempts + 1, updated_at = now()
WHERE payment_hash = $1 AND state = 'pending'
RETURNING amount_msat, destination, invoice, idempotency_key, attempts
"""

_SET_INVOICE = """
UPDATE refunds SET invoice = $3, updated_at = now()
WHERE payment_hash = $1 AND claimed_by = $2 AND state = 'paying' AND invoice IS NULL
RETURNING id
"""

_SETTLE = """
UPDATE refunds SET state = 'paid', claimed_by = NULL, claimed_at = NULL, last_error = NULL, updated_at = now()
WHERE payment_hash = $1 AND claimed_by = $2 AND state = 'paying'
RETURNING id
"""

_FAIL = """
UPDATE refunds SET state = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, claimed_by = NULL, claimed_at = NULL,
                   last_error = $3, updated_at = now()
WHERE payment_hash = $1 AND claimed_by = $2 AND state = 'paying'
RETURNING id
"""

_RELEASE_STALE = """
UPDATE refunds SET state = 'pending', claimed_by = NULL, claimed_at = NULL, updated_at = now()
WHERE state = 'paying' AND claimed_at < $1
RETURNING id
"""

_DUE = """
SELECT payment_hash FROM refunds WHERE state = 'pending' AND role = $3 AND updated_at < $1 ORDER BY updated_at LIMIT $2
"""

_STATUS = "SELECT role, amount_msat, state, attempts, last_error FROM refunds WHERE payment_hash = $1"

_FAILING = """
SELECT count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state IN ('pending', 'paying') AND attempts >= $1) AS failing
FROM refunds
"""


@dataclass(frozen=True, slots=True)
class Status:
    """A refund as operators and tests see it (no destination, no invoice)."""

    role: str
    amount_msat: int
    state: str  # pending | paying | paid | failed
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Refund:
    payment_hash: str  # the paid invoice whose unused part is returned
    role: str  # node | router_fee | provider
    amount_msat: int
    destination: str  # the client's Lightning address, LNURL-pay or NWC connection: never logged
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a worker needs to pay a refund it now holds."""

    amount_msat: int
    destination: str
    invoice: str | None  # the destination's invoice from an earlier attempt: pay (or look up) that one
    idempotency_key: str
    attempts: int  # including this one


class RefundStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def open(self, refund: Refund) -> bool:
        """Record a refund to make; False if this invoice already has one (never two refunds of one payment)."""
        row = await self._pool.fetchval(
            _OPEN, refund.payment_hash, refund.role, refund.amount_msat, refund.destination, refund.idempotency_key
        )
        return row is not None

    async def begin(self, payment_hash: str, worker: str) -> Attempt | None:
        """Take a pending refund to pay it; None if another worker holds it or it is settled or failed."""
        row = await self._pool.fetchrow(_BEGIN, payment_hash, worker)
        if row is None:
            return None
        return Attempt(row["amount_msat"], row["destination"], row["invoice"], row["idempotency_key"], row["attempts"])

    async def set_invoice(self, payment_hash: str, worker: str, invoice: str) -> bool:
        """Fix the destination's invoice for this refund, before paying it; False if one is already fixed."""
        return await self._pool.fetchval(_SET_INVOICE, payment_hash, worker, invoice) is not None

    async def settle(self, payment_hash: str, worker: str) -> bool:
        return await self._pool.fetchval(_SETTLE, payment_hash, worker) is not None

    async def fail(self, payment_hash: str, worker: str, error: str, *, final: bool = False) -> bool:
        """The attempt failed: back to `pending` for a retry, or `failed` for good. `error` must name no
        destination or secret (it is stored and shown to operators)."""
        return await self._pool.fetchval(_FAIL, payment_hash, worker, error[:MAX_ERROR_CHARS], final) is not None

    async def release_stale(self, claimed_before: float) -> int:
        """Refunds a dead worker held since before `claimed_before` become pending again (their invoice stays)."""
        return len(await self._pool.fetch(_RELEASE_STALE, datetime.fromtimestamp(claimed_before, UTC)))

    async def due(self, role: str, updated_before: float, limit: int) -> list[str]:
        """`role`'s pending refunds last touched before `updated_before` (the retry backoff), oldest first: a payee
        retries only its own refunds, from its own wallet."""
        rows = await self._pool.fetch(_DUE, datetime.fromtimestamp(updated_before, UTC), limit, role)
        return [r["payment_hash"] for r in rows]

    async def status(self, payment_hash: str) -> Status | None:
        row = await self._pool.fetchrow(_STATUS, payment_hash)
        if row is None:
            return None
        return Status(row["role"], row["amount_msat"], row["state"], row["attempts"], row["last_error"])

    async def failing(self, min_attempts: int) -> tuple[int, int]:
        """Anomalies for reconciliation: (refunds failed for good, open refunds tried at least `min_attempts`)."""
        row = await self._pool.fetchrow(_FAILING, min_attempts)
        assert row is not None
        return row["failed"], row["failing"]
