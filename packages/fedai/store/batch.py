"""Group commit: concurrent writers share one database round trip, and each still awaits its own row.

Nothing is write-behind: `submit` returns only after the batch holding the item has committed. The first
writer to arrive when no flush is running flushes inline (no extra task, no extra loop iteration), so at
concurrency 1 a write costs one round trip, as a plain insert would; writers arriving during a flush
wait and go together in the next batch.

One bad item cannot fail the others: when a batch fails with an error that `isolate` says may be one item's
fault (a value the column cannot hold, a violated constraint), each item is written again on its own, so only
the bad one gets the error. Other failures (the database is down) reach every waiter of the batch at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WriteInterrupted(RuntimeError):
    """The flush carrying this item was cancelled; whether it committed is unknown."""


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_batch: int = 512,
        *,
        isolate: Callable[[Exception], bool] = lambda _: False,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._isolate = isolate
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing = False
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._flushing:
            try:
                await self._drain()
            except BaseException:
                if fut.done() and not fut.cancelled():
                    fut.exception()  # this writer is leaving; its outcome is reported by the raise
                else:
                    fut.cancel()
                raise
        return await fut

    async def _drain(self) -> None:
        """Flush batches until nothing is pending. If this writer is cancelled meanwhile, a task takes over."""
        self._flushing = True
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._flush_batch(batch)
        finally:
            self._flushing = False
            if self._pending:  # only after a cancellation: hand the waiting writers to a task
                asyncio.get_running_loop().create_task(self._drain())

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:  # every waiter of this batch gets the failure
            if len(batch) > 1 and isinstance(exc, Exception) and self._isolate(exc):
                for one in batch:  # the batch wrote nothing: write each alone, so only the bad item fails
                    await self._flush_batch([one])
                return
            failure = exc if isinstance(exc, Exception) else WriteInterrupted("the batch's write was interrupted")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.items += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
