"""Node health in Postgres, so router replicas agree on cooldowns and on each node's recent record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class HealthRow:
    pubkey: str
    consecutive_failures: int
    cooldown_until: float
    quarantined_until: float
    last_failure: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WindowRow:
    pubkey: str
    successes: int
    failures: int
    latency_ms: float | None  # mean latency of successes in the window


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(max(0.0, value), UTC)


async def save_failure(
    pool: asyncpg.Pool, pubkey: str, consecutive: int, cooldown_until: float, quarantined_until: float, code: str
) -> None:
    """Record a failure; cooldowns only ever extend (another replica may have set a longer one)."""
    await pool.execute(
        """
        INSERT INTO node_health (pubkey, consecutive_failures, cooldown_until, quarantined_until, last_failure)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (pubkey) DO UPDATE SET
            consecutive_failures = GREATEST(node_health.consecutive_failures + 1, EXCLUDED.consecutive_failures),
            cooldown_until = GREATEST(node_health.cooldown_until, EXCLUDED.cooldown_until),
            quarantined_until = GREATEST(node_health.quarantined_until, EXCLUDED.quarantined_until),
            last_failure = EXCLUDED.last_failure, updated_at = now()
        """,
        pubkey,
        consecutive,
        _ts(cooldown_until),
        _ts(quarantined_until),
        code,
    )


async def save_recovery(pool: asyncpg.Pool, pubkey: str) -> None:
    """A success after failures: clear the streak and the cooldown (a quarantine runs its course)."""
    await pool.execute(
        "UPDATE node_health SET consecutive_failures = 0, cooldown_until = 'epoch', updated_at = now()"
        " WHERE pubkey = $1 AND (consecutive_failures > 0 OR cooldown_until > now())",
        pubkey,
    )


async def load_health(pool: asyncpg.Pool, since: datetime | None) -> list[HealthRow]:
    query = (
        "SELECT pubkey, consecutive_failures, cooldown_until, quarantined_until, last_failure, updated_at"
        " FROM node_health"
    )
    rows = await (pool.fetch(query + " WHERE updated_at > $1", since) if since else pool.fetch(query))
    return [
        HealthRow(
            r["pubkey"],
            r["consecutive_failures"],
            r["cooldown_until"].timestamp(),
            r["quarantined_until"].timestamp(),
            r["last_failure"],
            r["updated_at"],
        )
        for r in rows
    ]


async def add_stats(pool: asyncpg.Pool, deltas: list[tuple[str, int, int, float]]) -> None:
    """Add (pubkey, successes, failures, latency_ms_sum) to the current minute's bucket, in one statement."""
    if not deltas:
        return
    await pool.execute(
        """
        INSERT INTO node_stats (pubkey, bucket, successes, failures, latency_ms_sum)
        SELECT u.pubkey, date_trunc('minute', now()), u.s, u.f, u.l
        FROM unnest($1::text[], $2::int[], $3::int[], $4::float8[]) AS u(pubkey, s, f, l)
        ON CONFLICT (pubkey, bucket) DO UPDATE SET
            successes = node_stats.successes + EXCLUDED.successes,
            failures = node_stats.failures + EXCLUDED.failures,
            latency_ms_sum = node_stats.latency_ms_sum + EXCLUDED.latency_ms_sum
        """,
        [d[0] for d in deltas],
        [d[1] for d in deltas],
        [d[2] for d in deltas],
        [d[3] for d in deltas],
    )


async def load_window(pool: asyncpg.Pool, minutes: int) -> list[WindowRow]:
    rows = await pool.fetch(
        "SELECT pubkey, sum(successes)::int AS s, sum(failures)::int AS f,"
        " sum(latency_ms_sum) / NULLIF(sum(successes), 0) AS l"
        " FROM node_stats WHERE bucket > now() - make_interval(mins => $1) GROUP BY pubkey",
        minutes,
    )
    return [WindowRow(r["pubkey"], r["s"], r["f"], r["l"]) for r in rows]


async def prune_stats(pool: asyncpg.Pool, keep_minutes: int) -> None:
    await pool.execute("DELETE FROM node_stats WHERE bucket < now() - make_interval(mins => $1)", keep_minutes)


async def record_attempt(
    pool: asyncpg.Pool, request_id: str, node: str, attempt: int, outcome: str, latency_ms: float
) -> None:
    await pool.execute(
        "INSERT INTO dispatch_attempts (request_id, node, attempt, outcome, latency_ms) VALUES ($1, $2, $3, $4, $5)",
        request_id,
        node,
        attempt,
        outcome,
        latency_ms,
    )
