"""The router's background work: loops that run every few seconds, and one-off jobs, all cancelled at stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg

from fedai.service.tasks import cancel_and_wait

log = logging.getLogger("fedai.router")


class Background:
    """Owns every task the router runs besides requests; `stop()` cancels them all and waits for them."""

    def __init__(self) -> None:
        self._loops: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()

    def every(self, interval_s: float, what: str, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` every `interval_s`. A database hiccup is logged as a warning; any other failure (a bug, a row
        that does not parse) is logged as an error; neither stops the loop."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await job()
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning(f"{what} failed", extra={"error": type(exc).__name__})
                except Exception as exc:  # noqa: BLE001 - one bad run must not end the loop for good
                    log.error(f"{what} failed unexpectedly", extra={"error": type(exc).__name__})

        self._loops.append(asyncio.create_task(loop(), name=what))

    def spawn(self, job: Coroutine[Any, Any, None], what: str) -> None:
        """Run `job` once; it is cancelled at stop and its failure is logged, not lost."""
        task = asyncio.create_task(job, name=what)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "background job failed", extra={"job": task.get_name(), "error": type(task.exception()).__name__}
            )

    async def stop(self) -> None:
        await cancel_and_wait([*self._loops, *self._jobs])
