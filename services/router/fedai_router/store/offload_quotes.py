"""Awards won for clients' quotes (docs/payments.md#federation-settlement): the job a peer router will run once the
client has paid it, kept with its quote until `POST /pay` binds it to a payment request and `/infer` submits it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from fedai.protocol.event import Event, decode_event


@dataclass(frozen=True, slots=True)
class WonJob:
    """A peer's award for one exact job, won when a client asked a quote: what paying and running it need. The
    salt is secret (never published): only the provider (in the sealed submit) and the client (in the answer)
    learn it."""

    job_id: str
    provider: str  # the winner
    price_msat: int  # its bid: what the client pays it
    salt: str
    job_hash: str  # the RFB's salted hash of the job: the client's request must hash to it
    deadline_s: int  # the award's deadline: the job must be submitted before it
    rfb: Event
    bid: Event
    award: Event


_COLUMNS = "job_id, provider, price_msat, salt, job_hash, deadline, rfb, bid, award"


async def insert_won(pool: asyncpg.Pool, quote_id: str, job: WonJob) -> None:
    await pool.execute(
        f"INSERT INTO offload_quotes (quote_id, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",  # noqa: S608
        quote_id,
        job.job_id,
        job.provider,
        job.price_msat,
        job.salt,
        job.job_hash,
        datetime.fromtimestamp(job.deadline_s, UTC),
        job.rfb.to_json().decode(),
        job.bid.to_json().decode(),
        job.award.to_json().decode(),
    )


async def won_for_quote(pool: asyncpg.Pool, quote_id: str) -> tuple[WonJob, str | None] | None:
    """The award won for `quote_id` and the payment request bound to it (None before `POST /pay`), or None when
    the quote is a local node's."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, payment_request FROM offload_quotes WHERE quote_id = $1",  # noqa: S608
        quote_id,
    )
    if row is None:
        return None
    job = WonJob(
        job_id=row["job_id"],
        provider=row["provider"],
        price_msat=row["price_msat"],
        salt=row["salt"],
        job_hash=row["job_hash"],
        deadline_s=int(row["deadline"].timestamp()),
        rfb=decode_event(row["rfb"]),
        bid=decode_event(row["bid"]),
        award=decode_event(row["award"]),
    )
    return job, row["payment_request"]


async def bind_payment_request(pool: asyncpg.Pool, quote_id: str, payment_request: str) -> bool:
    """Bind the quote's award to the payment request issued for it, once; True if it is (now) bound to it."""
    bound = await pool.fetchval(
        "UPDATE offload_quotes SET payment_request = coalesce(payment_request, $2) WHERE quote_id = $1"
        " RETURNING payment_request",
        quote_id,
        payment_request,
    )
    return bool(bound == payment_request)


async def cancel_unpaid(pool: asyncpg.Pool) -> int:
    """Cancel the awards of quotes that expired with no payment request issued (no client can pay them any more:
    `POST /pay` refuses an expired quote), so they stop counting against their peer's spend cap. Returns how
    many."""
    status = await pool.execute(
        "UPDATE federation_jobs j SET status = 'cancelled', updated_at = now()"
        " FROM offload_quotes o JOIN quotes q ON q.id = o.quote_id"
        " WHERE j.job_id = o.job_id AND j.role = 'requester' AND j.status = 'awarded'"
        " AND o.payment_request IS NULL AND q.expires_at < now()"
    )
    return int(status.split()[-1])
