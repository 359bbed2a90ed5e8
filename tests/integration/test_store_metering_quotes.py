"""Metering writes and quote spending against real PostgreSQL: one bad row in a group-committed batch fails
alone, a quote is spent once however many spenders race, and only its spender can give it back."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import MeteringRecord
from fedai_router.store.metering import MeteringEntry, MeteringStore
from fedai_router.store.quotes import QuoteRow, get_quote, insert_quote, release_quote, use_quote

EVENT = Event(id="0" * 64, pubkey="0" * 64, created_at=0, kind=21035, tags=[], content="{}", sig="0" * 128)


def entry(input_tokens: int = 3) -> MeteringEntry:
    record = MeteringRecord(
        request=secrets.token_hex(32),
        model="m",
        input_tokens=input_tokens,
        output_tokens=3,
        wall_ms=1.0,
        bytes_in=1,
        bytes_out=1,
        prompt_sha256="a" * 64,
        price_msat=9,
    )
    return MeteringEntry(record=record, event=EVENT, origin_id=secrets.token_hex(32), client="c", node="n")


class CountingPool:
    """The pool, noting how many rows each metering statement carried."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[int] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.statements.append(len(args[0]))
        return await self.pool.fetch(query, *args)

    async def executemany(self, command: str, args: Any) -> None:
        await self.pool.executemany(command, args)


@pytest.mark.parametrize(
    ("bad_tokens", "error"),
    [(2**31, asyncpg.DataError), (-1, asyncpg.CheckViolationError)],  # beyond `integer`; the CHECK (>= 0)
    ids=["overflow", "check"],
)
async def test_one_bad_record_fails_alone_and_its_batch_mates_commit(
    db_pool: asyncpg.Pool, bad_tokens: int, error: type[Exception]
) -> None:
    counting = CountingPool(db_pool)
    store = MeteringStore(db_pool, counting)
    leader, good1, bad, good2 = entry(), entry(), entry(bad_tokens), entry()
    # the leader flushes alone at once; the three others arrive meanwhile and share the next batch
    results = await asyncio.gather(*(store.record(e) for e in (leader, good1, bad, good2)), return_exceptions=True)
    assert counting.statements[:2] == [1, 3]  # they really were one batch
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], error)
    ids = [e.record.request for e in (leader, good1, bad, good2)]
    stored = {
        r["request_id"]
        for r in await db_pool.fetch("SELECT request_id FROM metering_records WHERE request_id = ANY($1)", ids)
    }
    assert stored == {leader.record.request, good1.record.request, good2.record.request}


async def _quote(pool: asyncpg.Pool) -> str:
    quote_id = secrets.token_hex(16)
    await insert_quote(
        pool,
        QuoteRow(
            id=quote_id,
            request_id=secrets.token_hex(32),
            client=Keys.generate().pubkey,
            model="m",
            node="n",
            input_tokens=2,
            max_output_tokens=8,
            input_msat=2,
            output_msat=16,
            router_fee_msat=0,
            total_msat=18,
            expires_at=datetime.now(UTC) + timedelta(minutes=2),
            router="r",
        ),
    )
    return quote_id


async def test_a_spent_quote_cannot_be_spent_again(db_pool: asyncpg.Pool) -> None:
    quote_id = await _quote(db_pool)
    assert await use_quote(db_pool, quote_id, "first")
    assert not await use_quote(db_pool, quote_id, "second")
    row = await get_quote(db_pool, quote_id)
    assert row is not None and row.used_at is not None


async def test_of_racing_spenders_exactly_one_wins(db_pool: asyncpg.Pool) -> None:
    quote_id = await _quote(db_pool)
    wins = await asyncio.gather(*(use_quote(db_pool, quote_id, f"spender-{i}") for i in range(8)))
    assert wins.count(True) == 1


async def test_only_the_spender_can_give_a_quote_back(db_pool: asyncpg.Pool) -> None:
    quote_id = await _quote(db_pool)
    assert await use_quote(db_pool, quote_id, "mine")
    assert not await release_quote(db_pool, quote_id, "someone else")
    assert not await use_quote(db_pool, quote_id, "someone else")  # still spent
    assert await release_quote(db_pool, quote_id, "mine")
    assert not await release_quote(db_pool, quote_id, "mine")  # once
    row = await get_quote(db_pool, quote_id)
    assert row is not None and row.used_at is None
    assert await use_quote(db_pool, quote_id, "next")  # usable again
    assert not await release_quote(db_pool, quote_id, "mine")  # the earlier spender cannot take it from the next
