"""The SDK's stream bounds (`stream_limits`) against a scripted router on loopback that signs real chunks and
then misbehaves: keep-alive comments forever, silence, chunks forever, a flood of output. Both clients end
each with a typed `FedaiError` instead of waiting forever or buffering without limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import StreamChunk
from fedai.sdk import AsyncClient, AsyncStream, Client, Stream, StreamLimits
from fedai.service.sse import format_sse
from tests.support.servers import serve_app

NO_HANG_S = 15.0
PAUSE_S = {"keepalive": 0.05, "forever": 0.05, "flood": 0.001, "silent": 60.0}


@dataclass
class ScriptedRouter:
    """Answers /infer/stream with one signed chunk, then does what `mode` says."""

    mode: str
    keys: Keys

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/infer/stream", self._stream, methods=["POST"])])

    async def _stream(self, request: Request) -> Response:
        return StreamingResponse(self._events(decode_event(await request.body())), media_type="text/event-stream")

    def _chunk(self, request: Event, seq: int, delta: str) -> bytes:
        chunk = StreamChunk(seq=seq, delta=delta)
        event = seal(self.keys, Kind.STREAM_CHUNK, chunk, to=request.pubkey, reply_to=request.id)
        return format_sse("chunk", event.to_json())

    async def _events(self, request: Event) -> AsyncIterator[bytes]:
        yield self._chunk(request, 0, "alpha")
        seq = 1
        while True:
            if self.mode == "keepalive":
                yield b": ping\n\n"
            elif self.mode in ("forever", "flood"):
                yield self._chunk(request, seq, " word" if self.mode == "forever" else "x" * 1024)
                seq += 1
            await asyncio.sleep(PAUSE_S[self.mode])


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ScriptedRouter]]:
    router = ScriptedRouter(request.param, Keys.generate())
    async with serve_app(router.app()) as url:
        yield url, router


async def _drain_async(stream: AsyncStream, into: list[str]) -> None:
    async for delta in stream:
        into.append(delta)


def _drain_sync(stream: Stream, into: list[str]) -> None:
    for delta in stream:
        into.append(delta)


async def _run_async(url: str, router: ScriptedRouter, limits: StreamLimits) -> tuple[list[str], FedaiError]:
    received: list[str] = []
    client = AsyncClient(url, router_pubkey=router.keys.pubkey, stream_limits=limits)
    async with asyncio.timeout(NO_HANG_S), client:
        stream = await client.stream("m", "hello", max_tokens=1000)
        with pytest.raises(FedaiError) as err:
            await _drain_async(stream, received)
    return received, err.value


def _run_sync(url: str, router: ScriptedRouter, limits: StreamLimits) -> tuple[list[str], FedaiError]:
    received: list[str] = []
    with Client(url, router_pubkey=router.keys.pubkey, stream_limits=limits, timeout=NO_HANG_S) as client:
        stream = client.stream("m", "hello", max_tokens=1000)
        with stream, pytest.raises(FedaiError) as err:
            _drain_sync(stream, received)
    return received, err.value


IDLE = StreamLimits(max_s=30, idle_s=0.5)


@pytest.mark.parametrize("scripted", ["keepalive", "silent"], indirect=True)
async def test_async_client_ends_a_stream_without_output_at_its_idle_bound(
    scripted: tuple[str, ScriptedRouter],
) -> None:
    received, err = await _run_async(*scripted, IDLE)
    assert (received, err.code, err.message) == (
        ["alpha"],
        "upstream_timeout",
        "router stream sent no output for 0.5 s",
    )


@pytest.mark.parametrize("scripted", ["keepalive"], indirect=True)
async def test_sync_client_ends_keepalives_at_its_idle_bound(scripted: tuple[str, ScriptedRouter]) -> None:
    received, err = await asyncio.wait_for(asyncio.to_thread(_run_sync, *scripted, IDLE), NO_HANG_S)
    assert (received, err.code, err.message) == (
        ["alpha"],
        "upstream_timeout",
        "router stream sent no output for 0.5 s",
    )


@pytest.mark.parametrize("scripted", ["silent"], indirect=True)
async def test_sync_client_ends_a_silent_stream_at_its_read_timeout(scripted: tuple[str, ScriptedRouter]) -> None:
    received, err = await asyncio.wait_for(asyncio.to_thread(_run_sync, *scripted, IDLE), NO_HANG_S)
    assert (received, err.code) == (["alpha"], "upstream_timeout")


@pytest.mark.parametrize("scripted", ["forever"], indirect=True)
async def test_endless_stream_ends_at_the_total_bound(scripted: tuple[str, ScriptedRouter]) -> None:
    received, err = await _run_async(*scripted, StreamLimits(max_s=1, idle_s=0.5))
    assert (err.code, err.message) == ("upstream_timeout", "router stream exceeded its time limit of 1 s")
    assert len(received) > 4


@pytest.mark.parametrize("scripted", ["flood"], indirect=True)
@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_output_flood_ends_at_the_byte_bound(scripted: tuple[str, ScriptedRouter], flavour: str) -> None:
    limits = StreamLimits(max_s=30, idle_s=5, max_output_bytes=8192)
    if flavour == "async":
        received, err = await _run_async(*scripted, limits)
    else:
        received, err = await asyncio.wait_for(asyncio.to_thread(_run_sync, *scripted, limits), NO_HANG_S)
    assert (err.code, err.message) == ("upstream_error", "router stream exceeded 8192 bytes of output")
    assert 0 < len("".join(received)) <= 8192
