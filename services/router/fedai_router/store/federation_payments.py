"""The provider's invoice of an award (`federation_jobs.payment_hash`, docs/federation.md#settlement): bound once
per award, and the paid job started only with the proof of that invoice, exactly once across replicas."""

from __future__ import annotations

import asyncpg


async def bind_invoice(pool: asyncpg.Pool, job_id: str, payment_hash: str) -> str | None:
    """Bind `payment_hash` to the provider row of `job_id` unless another is bound already. Returns the hash bound
    (ours, or the one bound first), None when there is no such awarded row."""
    bound: str | None = await pool.fetchval(
        "UPDATE federation_jobs SET payment_hash = COALESCE(payment_hash, $2), updated_at = now()"
        " WHERE job_id = $1 AND role = 'provider' AND status = 'awarded' RETURNING payment_hash",
        job_id,
        payment_hash,
    )
    return bound


async def invoice_of(pool: asyncpg.Pool, job_id: str) -> str | None:
    """The payment hash of the invoice issued for the provider row of `job_id`, if any."""
    bound: str | None = await pool.fetchval(
        "SELECT payment_hash FROM federation_jobs WHERE job_id = $1 AND role = 'provider'", job_id
    )
    return bound


async def start_paid_job(pool: asyncpg.Pool, job_id: str, payment_hash: str) -> bool:
    """The single-use claim of a paid job: awarded → running only for the invoice bound to this award."""
    started = await pool.fetchval(
        "UPDATE federation_jobs SET status = 'running', updated_at = now()"
        " WHERE job_id = $1 AND role = 'provider' AND status = 'awarded' AND payment_hash = $2 RETURNING job_id",
        job_id,
        payment_hash,
    )
    return started is not None


async def release_paid_job(pool: asyncpg.Pool, job_id: str) -> bool:
    """A paid job whose run failed goes back to `awarded`: the same proof serves a retry of this award until its
    deadline (nothing paid is lost, nothing is served twice)."""
    released = await pool.fetchval(
        "UPDATE federation_jobs SET status = 'awarded', updated_at = now()"
        " WHERE job_id = $1 AND role = 'provider' AND status = 'running' RETURNING job_id",
        job_id,
    )
    return released is not None


async def job_status(pool: asyncpg.Pool, job_id: str) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM federation_jobs WHERE job_id = $1 AND role = 'provider'", job_id
    )
    return status
