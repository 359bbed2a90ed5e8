"""Router /infer against scripted nodes: happy path, the verified chain, failover, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from fedai.sdk.chain import verify_chain
from fedai.protocol.event import decode_event
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url, node_timeout_ms=1500) as r:
        yield r


async def _start(node: FakeNode, router: RunningRouter, stack: list) -> None:
    cm = serve_app(node.app())
    node.endpoint = await cm.__aenter__()
    stack.append(cm)
    resp = await register(router.url, router.pubkey, node.keys, node.descriptor())
    assert resp.status_code == 200, resp.text


async def test_round_trip_returns_verified_chain(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    node = FakeNode()
    stack: list = []
    await _start(node, router, stack)
    try:
        async with AsyncClient(router.url) as client:
            chain = await client.infer("fake-model", "hello", max_tokens=8)
        assert chain.node == node.keys.pubkey
        assert chain.router == router.pubkey
        assert chain.output == "fake answer 1"
        row = await db_pool.fetchrow("SELECT * FROM metering_records WHERE request_id = $1", chain.forwarded.id)
        assert row is not None and row["origin_id"] == chain.request.id and row["node"] == node.keys.pubkey
    finally:
        for cm in stack:
            await cm.__aexit__(None, None, None)
