"""Fault test: a real node process (mock runner, one word every 200 ms) is killed with SIGKILL mid-stream. The
client gets a typed error event, the router's in-flight count for the node returns to 0, nothing is metered for
the broken stream (and nothing twice), and the next request is served by another node."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from fedai.cli.processes import Child, free_port, python_module, spawn
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient, AsyncStream
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter
from tests.support.services import base_env
from tests.support.wait import eventually

MODEL = "fake-model"  # the real node serves it under the scripted nodes' name, so either can take a request


def start_node(router: RunningRouter, logs: Path) -> tuple[Child, Keys]:
    keys = Keys.generate()
    env = {
        **base_env(),
        "NODE_PRIVATE_KEY": keys.secret_hex,
        "NODE_PORT": str(free_port()),
        "NODE_RUNNER": "mock",
        "NODE_MODEL_ID": MODEL,
        "NODE_MOCK_TOKEN_MS": "200",
        "ROUTER_ENDPOINT": router.url,
        "ROUTER_PUBLIC_KEY": router.pubkey,
        "NODE_HEARTBEAT_MS": "300",
    }
    return spawn("victim", python_module("fedai_node"), env, logs / "victim.log"), keys


async def _first_delta_then_rest(stream: AsyncStream, child: Child, received: list[str]) -> None:
    async for delta in stream:
        received.append(delta)
        if len(received) == 1:
            child.popen.kill()  # SIGKILL: no clean shutdown, the kernel drops its sockets
            await asyncio.to_thread(child.popen.wait, 10)


async def test_a_node_killed_mid_stream(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    child, victim = start_node(router, tmp_path)
    try:
        nodes = router.service.registry.nodes
        await eventually(lambda: victim.pubkey in nodes, within=30, what="the node process registers")
        received: list[str] = []
        async with asyncio.timeout(30), AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            stream = await client.stream(MODEL, "tell me a long story", max_tokens=64)
            with pytest.raises(FedaiError) as err:
                await _first_delta_then_rest(stream, child, received)
        assert child.popen.returncode == -9
        assert len(received) == 1
        assert err.value.code == "upstream_error"  # a typed error event, not a silent end or a hang
        state = nodes[victim.pubkey]
        await eventually(lambda: state.in_flight == 0, what="the killed node leaves the in-flight count")
        assert state.cooldown_until > time.time()
        assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0

        survivor = await spawn_node()
        async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            stream = await client.stream(MODEL, "and another one", max_tokens=16)
            text = "".join([d async for d in stream])
        assert text and stream.chain.node == survivor.keys.pubkey
        assert state.in_flight == 0
        rows = await db_pool.fetch("SELECT origin_id, node FROM metering_records")
        assert [(r["origin_id"], r["node"]) for r in rows] == [(stream.request.id, survivor.keys.pubkey)]
    finally:
        if child.popen.poll() is None:
            child.popen.kill()
            child.popen.wait(10)
