"""Deleting rows past their retention in bounded batches, shared by the router's and the node's pruning.

Each batch is one short `DELETE` whose statement picks at most `$2` rows older than `$1` seconds with
`FOR UPDATE SKIP LOCKED`: a large backlog never holds locks for long, and several processes pruning one database
split the rows between them instead of waiting on each other.
"""

from __future__ import annotations

import asyncio

import asyncpg


async def delete_in_batches(
    pool: asyncpg.Pool, statement: str, retention_s: float, *, batch: int, max_batches: int
) -> int:
    """Run `statement` ($1: retention in seconds, $2: the most rows per batch) until a batch comes back short or
    `max_batches` ran; returns how many rows went. A short batch means the backlog is done (or the rest is locked
    by another pruner)."""
    total = 0
    for _ in range(max_batches):
        status = await pool.execute(statement, float(retention_s), batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            break
        await asyncio.sleep(0)  # let the hot path have the pool between batches
    return total
