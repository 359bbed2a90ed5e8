"""The router's PostgreSQL: the configured server (or an embedded one), migrated at start, with a pool for
queries and one dedicated connection for each hot-path writer (the replay store and metering; payment claims use
theirs when it is free).

A server that cannot be reached, refuses us or cannot be migrated at start is a configuration error naming its
variable (`ROUTER_DB_URL`/`DATABASE_URL`, or `FEDAI_DATA_DIR` for the embedded one), never with the password;
with ROUTER_DB_WAIT_S a configured server that is not up yet is waited for that long first (containers).
An embedded server this router started is stopped when the router stops."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from fedai.store.db import (
    CONNECT_TIMEOUT_S,
    START_ERRORS,
    DedicatedConnection,
    DedicatedOrPool,
    create_pool,
    redact_dsn,
    unusable_database,
    wait_for_database,
)
from fedai.store.migrations import migrate
from fedai_router.config import RouterSettings

log = logging.getLogger("fedai.router")


@dataclass
class Database:
    pool: asyncpg.Pool
    replay_writer: DedicatedConnection  # the nonce claims' group commit
    metering_writer: DedicatedConnection  # the metering records' group commit
    payment_writer: DedicatedOrPool  # payment claims: the dedicated connection when free, else the pool
    embedded: Path | None = None  # the embedded server's data directory, stopped at close

    @classmethod
    async def open(cls, settings: RouterSettings) -> Database:
        embedded = None
        if settings.db_url:
            dsn, variable, target = settings.db_url, settings.db_url_variable, redact_dsn(settings.db_url)
        else:
            embedded = settings.data_dir / "pg"
            variable, target = "FEDAI_DATA_DIR", f"the embedded PostgreSQL in {embedded}"
            dsn = await _start_embedded(embedded, variable, target)
        wait_s = settings.db_wait_s if embedded is None else 0.0  # the embedded server is up once started

        def describe(exc: BaseException) -> str:
            return str(unusable_database(variable, target, exc, dsn))

        try:
            pool = await wait_for_database(
                lambda: create_pool(dsn, min_size=2, max_size=settings.db_pool_max, timeout_s=CONNECT_TIMEOUT_S),
                wait_s,
                describe,
            )
        except START_ERRORS as exc:
            raise unusable_database(variable, target, exc, dsn) from None
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
        except START_ERRORS as exc:
            await pool.close()
            raise unusable_database(variable, f"{target} (migrations)", exc, dsn) from None
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        return cls(pool, DedicatedConnection(dsn), DedicatedConnection(dsn), DedicatedOrPool(dsn, pool), embedded)

    async def close(self) -> None:
        await self.replay_writer.close()
        await self.metering_writer.close()
        await self.payment_writer.close()
        await self.pool.close()
        if self.embedded is not None:
            from fedai.store.embedded import stop_embedded

            await asyncio.to_thread(stop_embedded, self.embedded)
            log.info("embedded PostgreSQL stopped", extra={"data_dir": str(self.embedded)})


async def _start_embedded(pgdata: Path, variable: str, target: str) -> str:
    from fedai.store.embedded import start_embedded

    try:
        dsn = await asyncio.to_thread(start_embedded, pgdata)
    except START_ERRORS as exc:
        raise unusable_database(variable, target, exc) from None
    log.info("using embedded PostgreSQL", extra={"data_dir": str(pgdata.parent)})
    return dsn
