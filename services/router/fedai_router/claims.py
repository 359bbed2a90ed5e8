"""Claiming event ids so that no event is acted on twice: this replica's memory first, then Postgres (shared by
every replica, authoritative). An id is kept until no check of this router would accept the event any more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fedai.protocol.event import Event
from fedai.protocol.replay import ReplayGuard, claim_or_raise

T = TypeVar("T")


class Claims:
    def __init__(self, local: ReplayGuard, shared: ReplayGuard, window_s: int) -> None:
        self.local = local  # this replica's memory of accepted ids
        self.shared = shared  # Postgres
        self.window_s = window_s  # the most lenient check's window (envelope clock skew or NIP-98)

    async def claim(self, event: Event) -> None:
        """Record the event id in Postgres (authoritative across replicas) or raise `replay`. It is kept until
        no check of this router would accept the event any more (`window_s` past its created_at)."""
        await claim_or_raise(self.shared, event, self.window_s)

    async def claim_locally(self, event: Event) -> None:
        """This replica's memory of accepted ids: refuses a replay before any work is started for it."""
        await claim_or_raise(self.local, event, self.window_s)

    async def while_claiming(
        self,
        event: Event,
        work: Callable[[], Awaitable[T]],
        release: Callable[[T], Awaitable[None]] | None = None,
        *,
        local: bool = True,
    ) -> T:
        """Claim `event`'s id in Postgres while `work` (the node call) runs; give its result only if the claim won.

        The database round trip (a synchronous commit) overlaps the node call instead of adding to it. A replay
        to this replica is refused before any work (`claim_locally`); one sent to another replica at the same
        moment can cost that replica's node one wasted call, but never a second answer or metering record. If
        the claim loses, `release` undoes what `work` holds (e.g. an open stream). `local=False` when the caller
        has already made the local claim.
        """
        if local:
            await self.claim_locally(event)
        claim = asyncio.ensure_future(self.claim(event))
        try:
            result = await work()
        except BaseException:
            await claim  # a replay outranks the work's failure; otherwise the work's error stands
            raise
        try:
            await claim
        except BaseException:
            if release is not None:
                await release(result)
            raise
        return result
