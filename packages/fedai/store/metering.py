"""Verified metering records, written in group-committed batches before the client gets its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from fedai.protocol.event import Event
from fedai.protocol.messages import MeteringRecord
from fedai.store.batch import GroupCommit


@dataclass(frozen=True, slots=True)
class MeteringEntry:
    record: MeteringRecord
    event: Event
    origin_id: str
    client: str
    node: str


_INSERT = """
INSERT INTO metering_records (request_id, origin_id, client, node, model, input_tokens, output_tokens,
    wall_ms, bytes_in, bytes_out, prompt_sha256, price_msat, event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (request_id) DO NOTHING
"""


class MeteringStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._writer: GroupCommit[MeteringEntry, None] = GroupCommit(self._flush)

    async def record(self, entry: MeteringEntry) -> None:
        await self._writer.submit(entry)

    async def _flush(self, entries: list[MeteringEntry]) -> list[None]:
        args = [
            (
                e.record.request,
                e.origin_id,
                e.client,
                e.node,
                e.record.model,
                e.record.input_tokens,
                e.record.output_tokens,
                e.record.wall_ms,
                e.record.bytes_in,
                e.record.bytes_out,
                e.record.prompt_sha256,
                e.record.price_msat,
                e.event.to_json(),
            )
            for e in entries
        ]
        await self._pool.executemany(_INSERT, args)
        return [None] * len(entries)

    async def for_client(self, client: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT request_id, origin_id, node, model, input_tokens, output_tokens, price_msat, created_at"
            " FROM metering_records WHERE client = $1 ORDER BY created_at DESC LIMIT $2",
            client,
            limit,
        )
        return [dict(r) for r in rows]
