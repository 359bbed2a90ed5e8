"""Replay guard in Postgres: one unique row per accepted event id, shared by every router replica."""

from __future__ import annotations

import asyncpg

from fedai.store.batch import GroupCommit
from fedai.store.db import Executor

_CLAIM = """
INSERT INTO nonces (id, retain_until)
SELECT u.id, to_timestamp(u.t) FROM unnest($1::text[], $2::float8[]) AS u(id, t)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""


class PostgresReplayGuard:
    """Authoritative `ReplayGuard`: concurrent claims are group-committed into one INSERT."""

    def __init__(self, pool: asyncpg.Pool, writer: Executor | None = None) -> None:
        self._pool = pool
        self._db: Executor = writer or pool
        self._writer: GroupCommit[tuple[str, float], bool] = GroupCommit(self._flush)

    async def claim(self, event_id: str, retain_until: float) -> bool:
        return await self._writer.submit((event_id, retain_until))

    async def _flush(self, items: list[tuple[str, float]]) -> list[bool]:
        rows = await self._db.fetch(_CLAIM, [i for i, _ in items], [t for _, t in items])
        inserted = {r["id"] for r in rows}
        results: list[bool] = []
        for event_id, _ in items:
            # the same id twice in one batch: the first wins, the second is a replay
            results.append(event_id in inserted)
            inserted.discard(event_id)
        return results

    async def prune(self) -> int:
        """Forget ids past their retention. Returns how many were removed."""
        status = await self._pool.execute("DELETE FROM nonces WHERE retain_until < now()")
        return int(status.split()[-1])
