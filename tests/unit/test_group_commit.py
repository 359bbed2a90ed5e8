"""Group commit: batching under concurrency, one flush per lone writer, failures reach every waiter."""

from __future__ import annotations

import asyncio

import pytest

from fedai.store.batch import GroupCommit


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0.01)  # a database round trip
        if self.fail:
            raise RuntimeError("database down")
        return [i * 10 for i in items]


async def test_lone_writer_flushes_once() -> None:
    rec = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush)
    assert await writer.submit(1) == 10
    assert await writer.submit(2) == 20
    assert rec.batches == [[1], [2]]


async def test_concurrent_writers_share_batches_and_get_their_own_results() -> None:
    rec = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush)
    results = await asyncio.gather(*(writer.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert rec.batches[0] == [0]  # the first arrival flushes at once
    assert len(rec.batches) == 2  # everyone else waited for the next batch
    assert sorted(i for b in rec.batches for i in b) == list(range(20))


async def test_max_batch_is_respected() -> None:
    rec = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush, max_batch=4)
    await asyncio.gather(*(writer.submit(i) for i in range(10)))
    assert max(len(b) for b in rec.batches) <= 4


async def test_failure_reaches_every_waiter_of_the_batch() -> None:
    writer: GroupCommit[int, int] = GroupCommit(Recorder(fail=True).flush)
    results = await asyncio.gather(*(writer.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_cancelled_leader_hands_over_to_a_task() -> None:
    rec = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush)
    leader = asyncio.create_task(writer.submit(1))
    await asyncio.sleep(0)  # leader is now inside its flush
    follower = asyncio.create_task(writer.submit(2))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.wait_for(follower, 1) == 20


class Poisoned:
    """A flush that fails whenever the batch holds a negative item (like a row a column cannot hold)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0.01)
        if any(i < 0 for i in items):
            raise ValueError("a value out of range")
        return [i * 10 for i in items]


async def test_an_isolated_failure_fails_only_the_bad_item() -> None:
    rec = Poisoned()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush, isolate=lambda exc: isinstance(exc, ValueError))
    results = await asyncio.gather(*(writer.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True)
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError)
    assert rec.batches[:2] == [[1], [2, -3, 4]]  # the failed batch, then each of its items alone
    assert rec.batches[2:] == [[2], [-3], [4]]


async def test_a_failure_not_isolated_reaches_the_whole_batch_at_once() -> None:
    rec = Poisoned()
    writer: GroupCommit[int, int] = GroupCommit(rec.flush, isolate=lambda exc: isinstance(exc, KeyError))
    results = await asyncio.gather(*(writer.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True)
    assert results[0] == 10 and all(isinstance(r, ValueError) for r in results[1:])
    assert len(rec.batches) == 2  # no retries: a database that is down is not asked once per item
