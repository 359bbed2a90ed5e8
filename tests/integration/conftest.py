"""Fixtures for router tests: a fresh router per test on a truncated database, and scripted nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

SpawnNode = Callable[..., Awaitable[FakeNode]]


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url, node_timeout_ms=1500) as r:
        yield r


@pytest.fixture
async def spawn_node(router: RunningRouter) -> AsyncIterator[SpawnNode]:
    """Start a scripted node on loopback and register it with the test's router."""
    async with AsyncExitStack() as stack:

        async def spawn(**options: Any) -> FakeNode:
            node = FakeNode(**options)
            node.endpoint = await stack.enter_async_context(serve_app(node.app()))
            response = await register(router.url, router.pubkey, node.keys, node.descriptor())
            assert response.status_code == 200, response.text
            return node

        yield spawn
