"""Router streams under abuse, against scripted nodes on loopback: keep-alive comments forever, chunks forever,
a flood of output and too many chunks each end at their bound with a typed error event; the node is told to
stop (signed infer.cancel), what it produced is metered once if its metering arrives, and nothing stays in
flight. Small bounds (ROUTER_STREAM_* as settings) keep the tests fast."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import asyncpg
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient, AsyncStream
from fedai.service.stream_limits import CHUNK_SLACK, CHUNKS_PER_TOKEN
from tests.integration.conftest import SpawnNode
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

IDLE_S = 0.5
MAX_S = 2.0
MAX_OUTPUT = 16 * 1024
API_KEY = "fk-bounds-0123456789abcdef"
NO_HANG_S = 15.0  # without the bounds these streams never end: fail instead of hanging


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    """The shared fixture's router, with small stream bounds (spawn_node registers nodes with this one)."""
    await reset_database(db_pool)
    keys = {hashlib.sha256(API_KEY.encode()).hexdigest(): "ab" * 32}
    bounds = {"stream_idle_s": IDLE_S, "stream_max_s": MAX_S, "stream_max_output_bytes": MAX_OUTPUT}
    async with running_router(database_url, node_timeout_ms=1500, api_keys=keys, **bounds) as r:
        yield r


async def _stream(router: RunningRouter, max_tokens: int = 64) -> tuple[list[str], FedaiError]:
    """Stream one request through the SDK; returns the deltas received and the error that ended the stream."""
    received: list[str] = []
    async with asyncio.timeout(NO_HANG_S), AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=max_tokens)
        with pytest.raises(FedaiError) as err:
            await _drain(stream, received)
    return received, err.value


async def _drain(stream: AsyncStream, into: list[str]) -> None:
    async for delta in stream:
        into.append(delta)


async def _drain_openai(stream: openai.AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    async for chunk in stream:
        into.extend(c.delta.content or "" for c in chunk.choices)


async def _settled(router: RunningRouter, node: FakeNode) -> None:
    """The node leaves the router's in-flight count (its stream was closed or drained)."""
    state = router.service.registry.nodes[node.keys.pubkey]
    await eventually(lambda: state.in_flight == 0, within=5 + IDLE_S * 2, what="node leaves the in-flight count")


async def _metered(db_pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await db_pool.fetch("SELECT origin_id, node, event FROM metering_records"))


async def _metrics(router: RunningRouter) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(router.url + "/metrics", headers=router.admin)).text


async def test_keepalive_comments_after_the_first_chunk_end_at_the_idle_bound(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node(behaviour="keepalive_mid")
    received, err = await _stream(router)
    assert received == ["alpha"]
    assert (err.code, err.message) == ("upstream_timeout", f"node stream sent no output for {IDLE_S:g} s")
    await eventually(lambda: node.cancelled != set(), what="router sends infer.cancel")
    await _settled(router, node)
    assert await _metered(db_pool) == []  # it never sent its metering: nothing to store
    assert 'fedai_router_streams_total{outcome="capped"} 1.0' in await _metrics(router)


async def test_keepalive_comments_before_any_chunk_fail_over_to_another_node(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    stalling = await spawn_node(behaviour="keepalive_first")
    good = await spawn_node(input_msat=5000, output_msat=5000)  # dearer: ranked after the stalling node
    async with asyncio.timeout(NO_HANG_S), AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=16)
        text = "".join([d async for d in stream])
    assert text == "alpha bravo charlie delta echo foxtrot"
    assert (stalling.calls, stream.chain.node) == (1, good.keys.pubkey)
    await _settled(router, stalling)
    [row] = await _metered(db_pool)
    assert row["node"] == good.keys.pubkey


async def test_endless_stream_ends_at_the_total_bound_and_what_was_produced_is_metered(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node(behaviour="forever")
    node.word_delay_s = 0.05  # well inside the idle bound: only the total can stop it
    received, err = await _stream(router, max_tokens=1024)
    assert (err.code, err.message) == ("upstream_timeout", f"node stream exceeded its time limit of {MAX_S:g} s")
    assert len(received) > MAX_S / 0.05 / 4  # it was streaming all along
    await eventually(lambda: node.streams_finished == 1, what="the node stops on the cancel")
    await _settled(router, node)
    rows = await _metered(db_pool)
    assert [r["node"] for r in rows] == [node.keys.pubkey]  # metered once, for what it produced


async def test_output_flood_ends_at_the_byte_bound_and_is_metered(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node(behaviour="flood", flood_bytes=MAX_OUTPUT * 3 // 2)
    received, err = await _stream(router, max_tokens=1024)
    assert (err.code, err.message) == ("upstream_error", f"node stream exceeded {MAX_OUTPUT} bytes of output")
    assert 0 < len("".join(received)) <= MAX_OUTPUT  # the delta that crossed the bound was not relayed
    await eventually(lambda: node.cancelled != set(), what="router sends infer.cancel")
    await _settled(router, node)
    assert [r["node"] for r in await _metered(db_pool)] == [node.keys.pubkey]


async def test_chunk_bound_follows_max_tokens(router: RunningRouter, spawn_node: SpawnNode) -> None:
    node = await spawn_node(behaviour="forever")
    node.word_delay_s = 0.001
    max_tokens = 4
    bound = CHUNKS_PER_TOKEN * max_tokens + CHUNK_SLACK
    received, err = await _stream(router, max_tokens=max_tokens)
    assert (err.code, err.message) == ("upstream_error", f"node stream exceeded {bound} chunks")
    assert len(received) == bound
    await _settled(router, node)


async def test_openai_edge_gets_the_typed_error_in_its_own_shape(router: RunningRouter, spawn_node: SpawnNode) -> None:
    node = await spawn_node(behaviour="keepalive_mid")
    params = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    deltas: list[str] = []
    async with asyncio.timeout(NO_HANG_S), openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=API_KEY) as api:
        stream = await api.chat.completions.create(**params, stream=True)  # type: ignore[call-overload]
        with pytest.raises(openai.APIError) as err:
            await _drain_openai(stream, deltas)
    assert deltas == ["alpha"]
    assert err.value.code == "upstream_timeout"
    await _settled(router, node)


async def test_a_client_that_stops_reading_cannot_hold_the_node(database_url: str, db_pool: asyncpg.Pool) -> None:
    """The node streams fast, the client never reads: the router's writes block, so the node stream's own bounds
    are never checked; the response's deadline (total + idle) abandons it and the node is stopped."""
    await reset_database(db_pool)
    bounds = {"stream_idle_s": IDLE_S, "stream_max_s": MAX_S, "stream_max_output_bytes": 4 * 1024 * 1024 * 1024}
    node = FakeNode(behaviour="forever", word_delay_s=0.002, forever_delta="z" * 16 * 1024)
    async with running_router(database_url, node_timeout_ms=1500, **bounds) as router, serve_app(node.app()) as url:
        node.endpoint = url
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        payload = InferenceRequest(model="fake-model", prompt="hi", max_tokens=1024, stream=True)
        request = seal(Keys.generate(), Kind.INFER_REQUEST, payload, to=router.pubkey, nonce=True).to_json()
        head = f"POST /infer/stream HTTP/1.1\r\nHost: x\r\nContent-Length: {len(request)}\r\n\r\n".encode()
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", int(router.url.rsplit(":", 1)[1])))
            await loop.sock_sendall(sock, head + request)
            state = router.service.registry.nodes[node.keys.pubkey]
            await eventually(lambda: state.in_flight == 1, what="the stream is open")
            await eventually(lambda: node.cancelled != set(), within=MAX_S + IDLE_S + 5, what="infer.cancel sent")
            await _settled(router, node)
