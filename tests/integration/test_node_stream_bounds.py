"""The node's stream bounds while it relays its runner (NODE_STREAM_*): a model server that sends keep-alive
comments or empty events forever after one token ends at the idle bound; a runner that produces too much
output or too many deltas is stopped at the byte or chunk bound. Each ends with a typed error event, the
delta that would cross a bound is never written, and the capacity slot is freed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import msgspec
import pytest

from fedai.protocol.messages import InferenceRequest
from fedai.service.stream_limits import CHUNK_SLACK, CHUNKS_PER_TOKEN
from fedai_node.runners import RunnerResult, StreamItem
from fedai_node.runners.mock import MockRunner
from tests.integration.test_node_runners_fake import FakeLlama, fake_and_node, read_events
from tests.integration.test_node_runners_fake import request_event as llama_request
from tests.integration.test_node_streaming import MODEL, health, metric, request_event, running_node, stream
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.mark.parametrize("mode", ["keepalive", "empty"])
async def test_a_model_server_holding_the_stream_open_ends_at_the_idle_bound(
    http: httpx.AsyncClient, mode: str
) -> None:
    fake = FakeLlama(mode=mode)
    # the total (NODE_RUNNER_TIMEOUT_MS) is far away: only the idle bound can end this stream in time
    async with fake_and_node(fake, NODE_STREAM_IDLE_S="1", NODE_RUNNER_TIMEOUT_MS="30000") as node:
        async with http.stream("POST", f"{node.url}/infer/stream", content=llama_request(node).to_json()) as resp:
            assert resp.status_code == 200
            events = await read_events(resp)
        assert [e.event for e in events] == ["chunk", "error"]
        error = msgspec.json.decode(events[-1].data)["error"]
        assert error == {"code": "upstream_timeout", "message": "the runner's stream sent no output for 1 s"}
        await eventually(lambda: fake.hangups == 1, within=2, what="the model server's stream is closed")
        assert (await http.get(f"{node.url}/health")).json()["in_flight"] == 0


class Flood(MockRunner):
    """Yields `count` deltas of `delta`, then its result."""

    def __init__(self, delta: str, count: int) -> None:
        super().__init__(MODEL, 4096)
        self.delta, self.count, self.produced = delta, count, 0

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        for _ in range(self.count):
            self.produced += 1
            yield self.delta
        yield RunnerResult(self.delta * self.count, "stop", 1, self.count)


async def test_too_much_output_ends_at_the_byte_bound(http: httpx.AsyncClient) -> None:
    async with running_node(Flood("x" * 1024, 40), NODE_STREAM_MAX_OUTPUT_BYTES="16384") as node:
        seen = await stream(http, node, request_event(node.keys.pubkey, max_tokens=256))
        assert [e.event for _, e in seen.events] == ["chunk"] * 16 + ["error"]
        error = msgspec.json.decode(seen.named("error")[0].data)["error"]
        assert error == {"code": "upstream_error", "message": "the runner's stream exceeded 16384 bytes of output"}
        assert (await health(http, node))["in_flight"] == 0
        assert await metric(http, node, "fedai_node_streams_total", code="upstream_error") == 1


async def test_more_deltas_than_max_tokens_allow_end_at_the_chunk_bound(http: httpx.AsyncClient) -> None:
    runner = Flood("y", 500)
    async with running_node(runner) as node:
        seen = await stream(http, node, request_event(node.keys.pubkey, max_tokens=2))
        bound = CHUNKS_PER_TOKEN * 2 + CHUNK_SLACK
        assert [e.event for _, e in seen.events] == ["chunk"] * bound + ["error"]
        error = msgspec.json.decode(seen.named("error")[0].data)["error"]
        assert error == {"code": "upstream_error", "message": f"the runner's stream exceeded {bound} chunks"}
        assert runner.produced == bound + 1  # the runner was stopped right there
        assert (await health(http, node))["in_flight"] == 0
