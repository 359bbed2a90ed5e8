"""Federation jobs (`federation_jobs`): one row per awarded job on each side, written when the award is made
(requester) or accepted (provider), so any replica can find it by its award or job id.

Each row keeps the terms the bid was for (`JobTerms`): the provider runs a submitted job only if it matches
them. On the requester side the rows are also the spend ledger: `reserve_job` inserts a row only if the peer's
spend in the window plus this bid stays within the cap, under a per-peer lock, so parallel requests and other
replicas cannot overspend; `settle_job` then counts the receipt's price, and a failed or cancelled job counts
nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from fedai.protocol.event import Event

Role = Literal["requester", "provider"]
JobStatus = Literal["awarded", "running", "done", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("awarded", "running", "done", "failed", "cancelled")

_SELECT = (
    "SELECT job_id, role, peer, rfb_id, bid_id, award_id, capacity_token, price_msat, privacy, status, origin_id,"
    " receipt, created_at, updated_at, job_type, model, input_tokens, max_tokens, job_hash, deadline_ms,"
    " spent_msat FROM federation_jobs"
)
_TERMS = ("job_type", "model", "input_tokens", "max_tokens", "job_hash", "deadline_ms")


@dataclass(frozen=True, slots=True)
class JobTerms:
    """What the RFB asked and the bid was for: a submitted job must match these."""

    job_type: str
    model: str
    input_tokens: int
    max_tokens: int
    job_hash: str  # salted (fedai.protocol.federation.job_hash)
    deadline_ms: int  # unix ms


@dataclass(frozen=True, slots=True)
class NewJob:
    """A row to insert: the award just made (requester) or just accepted (provider)."""

    job_id: str
    role: Role
    peer: str  # the other router
    rfb_id: str
    bid_id: str
    award_id: str
    capacity_token: str
    price_msat: int
    privacy: int
    terms: JobTerms
    origin_id: str | None = None


@dataclass(frozen=True, slots=True)
class AwardRow:
    """A stored federation job. On the provider side `peer` is the requester the award came from."""

    job_id: str
    role: Role
    peer: str
    rfb_id: str
    bid_id: str
    award_id: str
    capacity_token: str
    price_msat: int
    privacy: int
    status: JobStatus
    origin_id: str | None
    receipt: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    terms: JobTerms | None  # None only for rows written before migration 0009
    spent_msat: int | None = None  # requester side: the receipt's price once settled


def _row(record: asyncpg.Record | None) -> AwardRow | None:
    if record is None:
        return None
    data = dict(record)
    terms = {name: data.pop(name) for name in _TERMS}
    bound = None if any(value is None for value in terms.values()) else JobTerms(**terms)
    return AwardRow(**data, terms=bound)


_INSERT = (
    "INSERT INTO federation_jobs (job_id, role, peer, rfb_id, bid_id, award_id, capacity_token, price_msat,"
    " privacy, status, origin_id, job_type, model, input_tokens, max_tokens, job_hash, deadline_ms)"
    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'awarded',$10,$11,$12,$13,$14,$15,$16)"
    " ON CONFLICT DO NOTHING RETURNING job_id"
)


def _insert_args(job: NewJob) -> tuple[Any, ...]:
    t = job.terms
    return (
        job.job_id,
        job.role,
        job.peer,
        job.rfb_id,
        job.bid_id,
        job.award_id,
        job.capacity_token,
        job.price_msat,
        job.privacy,
        job.origin_id,
        t.job_type,
        t.model,
        t.input_tokens,
        t.max_tokens,
        t.job_hash,
        t.deadline_ms,
    )


async def insert_job(pool: asyncpg.Pool | asyncpg.Connection, job: NewJob) -> bool:
    """Insert the row with status `awarded`; False if the job or its award is already stored (a replay, or
    another replica got there first)."""
    return await pool.fetchval(_INSERT, *_insert_args(job)) is not None


# What the requester owes a peer in the window: settled jobs at the receipt's price, open ones at the bid.
_SPENT = (
    "SELECT COALESCE(sum(CASE WHEN status = 'done' THEN COALESCE(spent_msat, price_msat)"
    " WHEN status IN ('awarded', 'running') THEN price_msat ELSE 0 END), 0)::bigint FROM federation_jobs"
    " WHERE role = 'requester' AND peer = $1 AND created_at > now() - make_interval(secs => $2)"
)


async def reserve_job(pool: asyncpg.Pool, job: NewJob, *, cap_msat: int, window_s: float) -> bool:
    """Requester side: insert `job` (its `price_msat` reserved against the peer's spend cap) only if what the
    peer has been paid or promised in the last `window_s` plus this price stays within `cap_msat`. Serialized
    per peer by a transaction-scoped advisory lock, so concurrent reservations (any replica) cannot overspend.
    False when the cap refuses it (nothing is written)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "fedai.peer_spend:" + job.peer)
        spent = await conn.fetchval(_SPENT, job.peer, float(window_s))
        if spent + job.price_msat > cap_msat:
            return False
        return await insert_job(conn, job)


async def spent(pool: asyncpg.Pool, peer: str, window_s: float) -> int:
    """What `reserve_job` counts for `peer` right now (settled plus reserved, msat)."""
    return int(await pool.fetchval(_SPENT, peer, float(window_s)))


async def find_award(pool: asyncpg.Pool, award_id: str) -> AwardRow | None:
    """The job an award id belongs to (award ids are unique), or None."""
    return _row(await pool.fetchrow(_SELECT + " WHERE award_id = $1", award_id))


async def get_job(pool: asyncpg.Pool, job_id: str) -> AwardRow | None:
    return _row(await pool.fetchrow(_SELECT + " WHERE job_id = $1", job_id))


async def set_job_status(
    pool: asyncpg.Pool,
    job_id: str,
    status: JobStatus,
    receipt: Event | dict[str, Any] | None = None,
    *,
    expect: Collection[str] | None = None,
) -> bool:
    """Move a job to `status` (and store the receipt if given). With `expect`, only from one of those statuses:
    `set_job_status(pool, id, "running", expect=("awarded",))` lets exactly one replica start the job.
    False if no row changed."""
    if status not in JOB_STATUSES:
        raise ValueError(f"unknown job status {status!r}")
    allowed = list(expect) if expect is not None else list(JOB_STATUSES)
    row = await pool.fetchrow(
        "UPDATE federation_jobs SET status = $2, receipt = COALESCE($3, receipt), updated_at = now()"
        " WHERE job_id = $1 AND status = ANY($4::text[]) RETURNING job_id",
        job_id,
        status,
        receipt,
        allowed,
    )
    return row is not None


async def settle_job(pool: asyncpg.Pool, job_id: str, receipt: Event, spent_msat: int) -> bool:
    """Requester side: the job is done; what counts against the peer's spend cap is now the receipt's price."""
    row = await pool.fetchrow(
        "UPDATE federation_jobs SET status = 'done', receipt = $2, spent_msat = $3, updated_at = now()"
        " WHERE job_id = $1 AND role = 'requester' AND status = 'awarded' RETURNING job_id",
        job_id,
        receipt,
        spent_msat,
    )
    return row is not None


async def start_job(pool: asyncpg.Pool, job_id: str) -> bool:
    """Provider side: `awarded` → `running`, exactly once across replicas (False if already started or gone)."""
    return await set_job_status(pool, job_id, "running", expect=("awarded",))


async def cancel_awarded(pool: asyncpg.Pool, rfb_id: str, requester: str) -> list[str]:
    """Provider side: the requester withdrew its RFB; jobs for it that have not started are cancelled."""
    rows = await pool.fetch(
        "UPDATE federation_jobs SET status = 'cancelled', updated_at = now()"
        " WHERE peer = $2 AND rfb_id = $1 AND role = 'provider' AND status = 'awarded' RETURNING job_id",
        rfb_id,
        requester,
    )
    return [r["job_id"] for r in rows]


async def peer_outcomes(pool: asyncpg.Pool, days: int = 7) -> dict[str, tuple[int, int]]:
    """Requester side: peer -> (done, failed) over the last `days`, to warm the reputation at start."""
    rows = await pool.fetch(
        "SELECT peer, count(*) FILTER (WHERE status = 'done') AS done, count(*) FILTER (WHERE status = 'failed')"
        " AS failed FROM federation_jobs WHERE role = 'requester' AND created_at > now() - make_interval(days => $1)"
        " GROUP BY peer",
        days,
    )
    return {r["peer"]: (int(r["done"]), int(r["failed"])) for r in rows}
