"""Payment requests the router issued and their payees' single-use claims (docs/payments.md#protocol-and-claims).

Every claim is one conditional `UPDATE … RETURNING`: of any number of replicas claiming one payment hash at the
same moment, exactly one gets the row; the others learn why they did not (a lookup, on the refusal path only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from fedai.protocol.event import Event, event_from_obj
from fedai.protocol.messages import PaymentRequest
from fedai.protocol.payment import ClaimOutcome
from fedai.store.db import Executor

_decode_event = msgspec.json.Decoder(Event).decode  # a request this router signed and stored: no size checks

_RECORD = """
WITH r AS (
    INSERT INTO payment_requests (id, quote, client, expires_at, event) VALUES ($1, $2, $3, $4, $5) RETURNING id
)
INSERT INTO payment_payees (payment_hash, request_id, role, payee, amount_msat, bolt11, expires_at)
SELECT u.h, r.id, u.role, u.payee, u.amount, u.bolt11, $4
FROM r, unnest($6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[]) AS u(h, role, payee, amount, bolt11)
"""

# All of the hashes or none, and (`$7`) only if they are every payee of the request: lock the claimable rows in
# one order (no deadlock between two claimers), then update them only if every one was claimable. The request's
# client and quote are bound here too, so a router that trusts its own stored request needs nothing else. The
# stored payment request comes back with the work payee's row (once, as text: decoded straight to an `Event`), so
# forwarding it costs no second statement.
_CLAIM = """
WITH want AS (
    SELECT p.payment_hash FROM payment_payees p JOIN payment_requests r ON r.id = p.request_id
    WHERE p.request_id = $1 AND r.client = $5 AND r.quote = $6 AND p.payment_hash = ANY($2::text[])
      AND p.state IN ('issued', 'released') AND p.expires_at > $4
    ORDER BY p.payment_hash
    FOR UPDATE OF p
), complete AS (
    SELECT count(*) = cardinality($2::text[])
       AND (NOT $7 OR (SELECT count(*) FROM payment_payees WHERE request_id = $1) = cardinality($2::text[])) AS ok
    FROM want
)
UPDATE payment_payees p
SET state = 'paid', claimed_by = $3, claimed_at = now(), updated_at = now()
FROM complete, payment_requests r
WHERE complete.ok AND r.id = $1 AND p.payment_hash IN (SELECT payment_hash FROM want)
RETURNING p.payment_hash, p.role, p.payee, p.amount_msat, CASE WHEN p.role <> 'router_fee' THEN r.event::text END
    AS event
"""

_WHY = """
SELECT p.payment_hash, p.state, p.expires_at, r.client, r.quote
FROM payment_payees p JOIN payment_requests r ON r.id = p.request_id
WHERE p.request_id = $1
"""

_CONSUME = """
WITH c AS (
    UPDATE payment_payees SET state = 'consumed', updated_at = now()
    WHERE request_id = $1 AND claimed_by = $2 AND state = 'paid'
    RETURNING payment_hash
), r AS (
    UPDATE payment_requests SET state = 'consumed'
    WHERE id = $1 AND state = 'issued' AND EXISTS (SELECT 1 FROM c) AND NOT EXISTS (
        SELECT 1 FROM payment_payees p
        WHERE p.request_id = $1 AND p.state <> 'consumed' AND p.payment_hash NOT IN (SELECT payment_hash FROM c)
    )
    RETURNING id
)
SELECT count(*) AS n FROM c
"""

# `_CONSUME` for many claims at once ($15 request ids, $16 claimants), as CTEs put before another statement: the
# answer's metering record carries it (`fedai_router.store.metering`), so a served paid request is consumed in the
# same transaction as its metering, at no statement of its own.
CONSUME_MANY_CTES = """
consumed AS (
    UPDATE payment_payees p SET state = 'consumed', updated_at = now()
    FROM unnest($15::text[], $16::text[]) AS h(request_id, claimant)
    WHERE p.request_id = h.request_id AND p.claimed_by = h.claimant AND p.state = 'paid'
    RETURNING p.request_id, p.payment_hash
), finished AS (
    UPDATE payment_requests q SET state = 'consumed'
    WHERE q.id IN (SELECT request_id FROM consumed) AND q.state = 'issued' AND NOT EXISTS (
        SELECT 1 FROM payment_payees p
        WHERE p.request_id = q.id AND p.state <> 'consumed'
          AND p.payment_hash NOT IN (SELECT payment_hash FROM consumed)
    )
    RETURNING q.id
)
"""

_RELEASE = """
UPDATE payment_payees SET state = 'released', claimed_by = NULL, claimed_at = NULL, updated_at = now()
WHERE request_id = $1 AND claimed_by = $2 AND state = 'paid'
RETURNING payment_hash
"""

_RELEASE_STALE = """
UPDATE payment_payees SET state = 'released', claimed_by = NULL, claimed_at = NULL, updated_at = now()
WHERE state = 'paid' AND claimed_at < $1
RETURNING payment_hash
"""

_EXPIRE = """
WITH p AS (
    UPDATE payment_payees SET state = 'expired', updated_at = now()
    WHERE state = 'issued' AND expires_at <= $1
    RETURNING payment_hash
), r AS (
    UPDATE payment_requests SET state = 'expired' WHERE state = 'issued' AND expires_at <= $1 RETURNING id
)
SELECT (SELECT count(*) FROM p) AS payees, (SELECT count(*) FROM r) AS requests
"""


@dataclass(frozen=True, slots=True)
class ClaimedPayee:
    payment_hash: str
    role: str
    payee: str  # the node (or provider) the request must now be served by, or the router for its fee
    amount_msat: int


@dataclass(frozen=True, slots=True)
class Consumption:
    """What a request holds (`claimant`'s claim on `request_id`), to consume with its answer's metering record."""

    request_id: str
    claimant: str


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    payees: tuple[ClaimedPayee, ...] = ()  # what was claimed (only when `outcome` is CLAIMED)
    event: Event | None = None  # the signed payment request as stored, when a work payee was claimed


@dataclass(frozen=True, slots=True)
class Expired:
    payees: int  # payees never paid, now `expired`
    requests: int  # requests past their expiry and not consumed, now `expired`


def _ts(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _why(row: asyncpg.Record | None, now: datetime, client: str, quote: str) -> ClaimOutcome:
    """Why a claim was refused, from the row as it is now."""
    if row is None or row["client"] != client or row["quote"] != quote:
        return ClaimOutcome.UNKNOWN
    state = row["state"]
    if state == "consumed":
        return ClaimOutcome.ALREADY_CONSUMED
    if state in ("expired", "refunded") or row["expires_at"] <= now:
        return ClaimOutcome.EXPIRED
    return ClaimOutcome.IN_USE  # held by a request in flight, or a concurrent claim that won


def worst(outcomes: list[ClaimOutcome]) -> ClaimOutcome:
    """Of several hashes' outcomes, the one to answer: unknown, then consumed, expired, in use."""
    order = (
        ClaimOutcome.UNKNOWN,
        ClaimOutcome.INCOMPLETE,
        ClaimOutcome.ALREADY_CONSUMED,
        ClaimOutcome.EXPIRED,
        ClaimOutcome.IN_USE,
    )
    return next((o for o in order if o in outcomes), ClaimOutcome.CLAIMED)


class PaymentStore:
    """The router's payment requests and payees on `pool` (every replica's pool on one database). Claims go
    through `writer` when given (a `DedicatedConnection` skips the pool's acquire and release on the hot path)."""

    def __init__(self, pool: asyncpg.Pool, writer: Executor | None = None) -> None:
        self._pool = pool
        self._db: Executor = writer or pool

    async def record(self, event: Event, request: PaymentRequest) -> None:
        """Store a payment request and its payees, in one statement: all rows or none."""
        payees = request.payees
        await self._pool.execute(
            _RECORD,
            event.id,
            request.quote,
            request.client,
            _ts(request.expires_at),
            event.to_dict(),
            [p.payment_hash for p in payees],
            [p.role for p in payees],
            [p.payee for p in payees],
            [p.amount_msat for p in payees],
            [p.bolt11 for p in payees],
        )

    async def claim(
        self, payment_hash: str, request_id: str, claimant: str, now: float, *, client: str, quote: str
    ) -> Claim:
        """Claim one payment hash of `request_id` for `claimant` (a token unique to one request)."""
        return await self._claim([payment_hash], request_id, claimant, now, client, quote, whole=False)

    async def claim_all(
        self, hashes: list[str], request_id: str, claimant: str, now: float, *, client: str, quote: str
    ) -> Claim:
        """The request path: claim every payee's hash of `request_id` for `claimant`, or none of them. Refused
        (`INCOMPLETE`) when `hashes` leaves a payee out; `UNKNOWN` for another client's or quote's request."""
        return await self._claim(hashes, request_id, claimant, now, client, quote, whole=True)

    async def _claim(
        self, hashes: list[str], request_id: str, claimant: str, now: float, client: str, quote: str, *, whole: bool
    ) -> Claim:
        wanted = sorted(set(hashes))
        at = _ts(now)
        won = await self._db.fetch(_CLAIM, request_id, wanted, claimant, at, client, quote, whole)
        if won:
            payees = tuple(ClaimedPayee(r["payment_hash"], r["role"], r["payee"], r["amount_msat"]) for r in won)
            stored = next((r["event"] for r in won if r["event"] is not None), None)
            return Claim(ClaimOutcome.CLAIMED, payees, None if stored is None else _decode_event(stored))
        rows = {r["payment_hash"]: r for r in await self._db.fetch(_WHY, request_id)}
        outcomes = [_why(rows.get(h), at, client, quote) for h in wanted]
        if whole and len(rows) > len(wanted) and ClaimOutcome.UNKNOWN not in outcomes:
            outcomes.append(ClaimOutcome.INCOMPLETE)
        return Claim(worst(outcomes))

    async def consume(self, request_id: str, claimant: str) -> int:
        """The request was served: what `claimant` holds of `request_id` is consumed for good. Returns how many
        payees; the request is `consumed` once all of them are."""
        n: int = await self._pool.fetchval(_CONSUME, request_id, claimant)
        return n

    async def release(self, request_id: str, claimant: str) -> int:
        """The payee failed to serve: give back what `claimant` holds, claimable again until expiry."""
        return len(await self._pool.fetch(_RELEASE, request_id, claimant))

    async def release_stale(self, claimed_before: float) -> int:
        """Give back claims held since before `claimed_before` (their replica died mid-request)."""
        return len(await self._pool.fetch(_RELEASE_STALE, _ts(claimed_before)))

    async def expire_unpaid(self, now: float) -> Expired:
        """Reconciliation: payees never paid and requests never consumed, past their expiry, become `expired`."""
        row = await self._pool.fetchrow(_EXPIRE, _ts(now))
        assert row is not None
        return Expired(payees=row["payees"], requests=row["requests"])

    async def issued_for(self, quote: str, client: str, now: float) -> Event | None:
        """The payment request already issued for this quote and client and not expired (a repeated `/pay`)."""
        row = await self._pool.fetchval(
            "SELECT event FROM payment_requests WHERE quote = $1 AND client = $2 AND state = 'issued'"
            " AND expires_at > $3 ORDER BY expires_at DESC LIMIT 1",
            quote,
            client,
            _ts(now),
        )
        return None if row is None else event_from_obj(row)

    async def event(self, request_id: str) -> Event | None:
        """The signed payment request as it was issued (what the node is forwarded)."""
        rows = await self._db.fetch("SELECT event FROM payment_requests WHERE id = $1", request_id)
        return event_from_obj(rows[0]["event"]) if rows else None

    async def states(self, request_id: str) -> dict[str, str]:
        """payment_hash → state, for a request (tests, `GET /payments/{id}`)."""
        rows = await self._pool.fetch(
            "SELECT payment_hash, state FROM payment_payees WHERE request_id = $1", request_id
        )
        return {r["payment_hash"]: r["state"] for r in rows}
