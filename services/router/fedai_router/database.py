"""The router's PostgreSQL: the configured server (or an embedded one), migrated at start, with a pool for
queries and one dedicated connection for each hot-path writer (the replay store and metering)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from fedai.store.db import DedicatedConnection, create_pool
from fedai.store.migrations import migrate
from fedai_router.config import RouterSettings

log = logging.getLogger("fedai.router")


@dataclass
class Database:
    pool: asyncpg.Pool
    replay_writer: DedicatedConnection  # the nonce claims' group commit
    metering_writer: DedicatedConnection  # the metering records' group commit

    @classmethod
    async def open(cls, settings: RouterSettings) -> Database:
        dsn = settings.db_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = await asyncio.to_thread(start_embedded, settings.data_dir / "pg")
            log.info("using embedded PostgreSQL", extra={"data_dir": str(settings.data_dir)})
        pool = await create_pool(dsn, min_size=2, max_size=settings.db_pool_max)
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        return cls(pool, DedicatedConnection(dsn), DedicatedConnection(dsn))

    async def close(self) -> None:
        await self.replay_writer.close()
        await self.metering_writer.close()
        await self.pool.close()
