"""Shared fixtures: one PostgreSQL database and one embedded relay per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from fedai.nostr.local_relay import start_local_relay
from fedai.store.db import create_pool
from tests.support.database import test_database

pytest_plugins = ["tests.support.llama", "tests.support.lnbits"]  # llama.cpp and LNbits servers


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with test_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def relay_url() -> AsyncIterator[str]:
    handle = await start_local_relay()
    yield handle.url
    handle.shutdown()


@pytest.fixture
async def own_relay_url() -> AsyncIterator[str]:
    """A relay of this test's own: nothing another test published (stored announcements) is replayed to it."""
    handle = await start_local_relay()
    yield handle.url
    handle.shutdown()
