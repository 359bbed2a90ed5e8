"""Verified metering records, written in group-committed batches before the client gets its answer; a paid
request's claim is consumed in the same statement (docs/payments.md#end-to-end-cost)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from fedai.protocol.event import Event
from fedai.protocol.messages import MeteringRecord
from fedai.store.batch import GroupCommit
from fedai.store.db import Executor
from fedai_router.store.payments import CONSUME_MANY_CTES, Consumption


@dataclass(frozen=True, slots=True)
class MeteringEntry:
    record: MeteringRecord
    event: Event
    origin_id: str
    client: str
    node: str
    attempt: int = 1  # which node call (1 = first) produced this record
    consume: Consumption | None = None  # a paid request's claim, consumed in the same statement


# One statement per batch (arrays unnested), so a batch of one costs what a single INSERT does.
_INSERT = """
INSERT INTO metering_records (request_id, origin_id, client, node, model, input_tokens, output_tokens,
    wall_ms, bytes_in, bytes_out, prompt_sha256, price_msat, event, attempt)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
    $8::float8[], $9::int8[], $10::int8[], $11::text[], $12::int8[], $13::jsonb[], $14::int[])
ON CONFLICT (request_id) DO NOTHING
"""
_INSERT_CONSUMING = "WITH " + CONSUME_MANY_CTES + _INSERT  # a batch with paid requests: their claims consumed too


def one_rows_fault(exc: Exception) -> bool:
    """A failure one row can cause (a value out of its column's range, a violated constraint, text Postgres
    cannot hold): the batch is retried row by row so the other rows still commit."""
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)


class MeteringStore:
    def __init__(self, pool: asyncpg.Pool, writer: Executor | None = None) -> None:
        self._pool = pool
        self._db: Executor = writer or pool
        self._writer: GroupCommit[MeteringEntry, None] = GroupCommit(self._flush, isolate=one_rows_fault)

    async def record(self, entry: MeteringEntry) -> None:
        await self._writer.submit(entry)

    async def _flush(self, entries: list[MeteringEntry]) -> list[None]:
        columns: list[list[Any]] = [[] for _ in range(14)]
        for e in entries:
            r = e.record
            row = (
                r.request,
                e.origin_id,
                e.client,
                e.node,
                r.model,
                r.input_tokens,
                r.output_tokens,
                r.wall_ms,
                r.bytes_in,
                r.bytes_out,
                r.prompt_sha256,
                r.price_msat,
                e.event.to_json(),
                e.attempt,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        paid = [e.consume for e in entries if e.consume is not None]
        if paid:
            ids, claimants = [c.request_id for c in paid], [c.claimant for c in paid]
            await self._db.fetch(_INSERT_CONSUMING, *columns, ids, claimants)
        else:
            await self._db.fetch(_INSERT, *columns)
        return [None] * len(entries)
