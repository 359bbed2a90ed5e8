"""The node's own single-use claims on its invoices (`payment_claims`, in the `NODE_DB_URL` database beside the
replay store; docs/payments.md#protocol-and-claims). Each claim records the model of the request it pays for
(migrations/0015), so the node's earnings can be reported by model.

A claim is one statement: insert the payment hash, or take it back from `released` for the same payment
request before its expiry. Of any number of concurrent claims (several node processes on one database), one
wins. A refusal is explained by a lookup, on the refusal path only. A claim a dead process left `claimed` is
released by `release_stale` (one conditional UPDATE: of several node processes running it, each row is released
once), run by `fedai_node.stale_claims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from fedai.protocol.payment import ClaimOutcome

_CLAIM = """
INSERT INTO payment_claims AS c (payment_hash, request_id, router, client, amount_msat, expires_at, state, claimed_by,
                                 claimed_at, model)
SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint, $6::timestamptz, 'claimed', $7::text, now(), $9::text
WHERE $6::timestamptz > $8::timestamptz
ON CONFLICT (payment_hash) DO UPDATE SET state = 'claimed', claimed_by = EXCLUDED.claimed_by, claimed_at = now(),
                                         updated_at = now(), model = EXCLUDED.model
WHERE c.state = 'released' AND c.request_id = EXCLUDED.request_id AND c.expires_at > $8
RETURNING payment_hash
"""

_WHY = "SELECT request_id, state, expires_at FROM payment_claims WHERE payment_hash = $1"

_CONSUME = """
UPDATE payment_claims SET state = 'consumed', updated_at = now()
WHERE payment_hash = $1 AND claimed_by = $2 AND state = 'claimed'
RETURNING payment_hash
"""

_RELEASE = """
UPDATE payment_claims SET state = 'released', claimed_by = NULL, claimed_at = NULL, updated_at = now()
WHERE payment_hash = $1 AND claimed_by = $2 AND state = 'claimed'
RETURNING payment_hash
"""

# $1: the stale delay in seconds, against the database's clock (the one `claimed_at` was set by)
_RELEASE_STALE = """
WITH released AS (
    UPDATE payment_claims SET state = 'released', claimed_by = NULL, claimed_at = NULL, updated_at = now()
    WHERE state = 'claimed' AND claimed_at < now() - make_interval(secs => $1)
    RETURNING 1
)
SELECT count(*) FROM released
"""


@dataclass(frozen=True, slots=True)
class NodeClaim:
    """A checked, settled invoice of this node, as the forwarded proof presented it."""

    payment_hash: str
    request_id: str  # the payment.request event id
    router: str
    client: str
    amount_msat: int
    expires_at: float  # unix seconds: the payment request's expiry
    model: str | None = None  # the model of the request it pays for (`fedai earnings --role node`, by model)


def _ts(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


class NodeClaims:
    """`payment_claims` on the node's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, claim: NodeClaim, claimant: str, now: float) -> ClaimOutcome:
        """Claim `claim.payment_hash` for `claimant` (the forwarded infer.request id)."""
        at = _ts(now)
        won = await self._pool.fetchval(
            _CLAIM,
            claim.payment_hash,
            claim.request_id,
            claim.router,
            claim.client,
            claim.amount_msat,
            _ts(claim.expires_at),
            claimant,
            at,
            claim.model,
        )
        if won is not None:
            return ClaimOutcome.CLAIMED
        return self._why(await self._pool.fetchrow(_WHY, claim.payment_hash), claim, at)

    @staticmethod
    def _why(row: asyncpg.Record | None, claim: NodeClaim, now: datetime) -> ClaimOutcome:
        if row is None:  # never inserted: the request had expired
            return ClaimOutcome.EXPIRED
        if row["request_id"] != claim.request_id:  # the same invoice presented under another payment request
            return ClaimOutcome.UNKNOWN
        if row["state"] == "consumed":
            return ClaimOutcome.ALREADY_CONSUMED
        if row["expires_at"] <= now:
            return ClaimOutcome.EXPIRED
        return ClaimOutcome.IN_USE

    async def consume(self, payment_hash: str, claimant: str) -> bool:
        """The request was served: the claim is spent for good."""
        return await self._pool.fetchval(_CONSUME, payment_hash, claimant) is not None

    async def release(self, payment_hash: str, claimant: str) -> bool:
        """Serving failed: the same proof may be presented again until the payment request expires."""
        return await self._pool.fetchval(_RELEASE, payment_hash, claimant) is not None

    async def release_stale(self, stale_s: float) -> int:
        """Release every claim held longer than `stale_s` (its process died mid-request): the proof may be
        presented again until its payment request expires. Returns how many were released."""
        n: int = await self._pool.fetchval(_RELEASE_STALE, float(stale_s))
        return n
