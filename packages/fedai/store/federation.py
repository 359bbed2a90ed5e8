"""Federation jobs (`federation_jobs`): one row per awarded job on each side, written when the award is made
(requester) or accepted (provider), so any replica can find it by its award or job id."""

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
    " receipt, created_at, updated_at FROM federation_jobs"
)


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


async def insert_job(pool: asyncpg.Pool, job: NewJob) -> bool:
    """Insert the row with status `awarded`; False if the job or its award is already stored (a replay, or
    another replica got there first)."""
    row = await pool.fetchrow(
        "INSERT INTO federation_jobs (job_id, role, peer, rfb_id, bid_id, award_id, capacity_token, price_msat,"
        " privacy, status, origin_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'awarded',$10)"
        " ON CONFLICT DO NOTHING RETURNING job_id",
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
    )
    return row is not None


async def find_award(pool: asyncpg.Pool, award_id: str) -> AwardRow | None:
    """The job an award id belongs to (award ids are unique), or None."""
    row = await pool.fetchrow(_SELECT + " WHERE award_id = $1", award_id)
    return AwardRow(**dict(row)) if row else None


async def get_job(pool: asyncpg.Pool, job_id: str) -> AwardRow | None:
    row = await pool.fetchrow(_SELECT + " WHERE job_id = $1", job_id)
    return AwardRow(**dict(row)) if row else None


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
