"""The node in front of a fake llama-server (`NODE_RUNNER=llama_cpp`) on loopback: readiness while the
runner is down, the runner's errors through `/infer` and `/infer/stream`, and a router's hang-up or cancel
reaching the model server (its HTTP response is closed, so it stops generating)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferCancel, InferenceRequest, InferenceResponse, NodeReply, decode_payload
from fedai.service.config import Env
from fedai.service.sse import SSEDecoder, SSEvent
from fedai_node.app import create_app
from fedai_node.config import from_env
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

ROUTER = Keys.generate()
WORDS = [f" w{i}" for i in range(40)]


@dataclass
class FakeLlama:
    """Just enough llama-server: /health, /props and a paced /completion stream, scripted by `mode` (ok, loading,
    context, slow, die, and keepalive/empty: one token, then comments or empty events forever)."""

    mode: str = "ok"
    token_s: float = 0.0
    open_streams: int = 0
    hangups: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health),
                Route("/props", self.props),
                Route("/completion", self.completion, methods=["POST"]),
            ]
        )

    def _loading(self) -> Response:
        return JSONResponse({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, 503)

    async def health(self, request: Request) -> Response:
        return self._loading() if self.mode == "loading" else JSONResponse({"status": "ok"})

    async def props(self, request: Request) -> Response:
        return JSONResponse({"model_alias": "fake.gguf", "default_generation_settings": {"n_ctx": 2048}})

    async def completion(self, request: Request) -> Response:
        body = await request.json()
        if self.mode == "loading":
            return self._loading()
        if self.mode == "context":
            error = {"code": 400, "message": "exceeds the available context size", "type": "exceed_context_size_error"}
            return JSONResponse({"error": error}, 400)
        return StreamingResponse(self._events(body["n_predict"]), media_type="text/event-stream")

    async def _events(self, n_predict: int) -> AsyncIterator[bytes]:
        self.open_streams += 1
        finished = False
        try:
            if self.mode == "slow":
                await asyncio.sleep(10)
            words = WORDS[:n_predict]
            for i, word in enumerate(words):
                if self.mode == "die" and i == 2:
                    raise ConnectionResetError("llama-server crashed")
                if self.mode in ("keepalive", "empty") and i == 1:  # one token, then only keep-alives
                    beat = b": ping\n\n" if self.mode == "keepalive" else b'data: {"content": "", "stop": false}\n\n'
                    while True:
                        yield beat
                        await asyncio.sleep(0.05)
                await asyncio.sleep(self.token_s)
                yield b"data: " + msgspec.json.encode({"content": word, "stop": False}) + b"\n\n"
            final = {
                "content": "",
                "stop": True,
                "stop_type": "limit",
                "tokens_predicted": len(words),
                "tokens_evaluated": 7,
            }
            yield b"data: " + msgspec.json.encode(final) + b"\n\n"
            finished = True
        finally:
            self.open_streams -= 1
            self.hangups += not finished


@dataclass
class Node:
    url: str
    keys: Keys


@contextlib.asynccontextmanager
async def node_for(runner_url: str, **env: str) -> AsyncIterator[Node]:
    keys = Keys.generate()
    values = {
        "NODE_PRIVATE_KEY": keys.secret_hex,
        "ROUTER_PUBLIC_KEY": ROUTER.pubkey,
        "NODE_RUNNER": "llama_cpp",
        "NODE_RUNNER_URL": runner_url,
        **env,
    }
    async with serve_app(create_app(from_env(Env(values)))) as url:
        yield Node(url, keys)


@contextlib.asynccontextmanager
async def fake_and_node(fake: FakeLlama, **env: str) -> AsyncIterator[Node]:
    async with serve_app(fake.app()) as runner_url, node_for(runner_url, **env) as node:
        yield node


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


def request_event(node: Node, **payload: Any) -> Event:
    fields: dict[str, Any] = {"model": "fake.gguf", "prompt": "count", "max_tokens": 30}
    fields.update(payload)
    return seal(ROUTER, Kind.INFER_REQUEST, InferenceRequest(**fields), to=node.keys.pubkey, nonce=True)


def code(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, str(resp.json()["error"]["code"])


async def read_events(resp: httpx.Response) -> list[SSEvent]:
    decoder, events = SSEDecoder(), []
    async for raw in resp.aiter_raw():
        events.extend(decoder.feed(raw))
    return events


async def test_runner_down_at_start_is_not_ready_until_it_comes_up(http: httpx.AsyncClient) -> None:
    port = free_port()
    async with node_for(f"http://127.0.0.1:{port}") as node:
        health = await http.get(f"{node.url}/health")
        assert health.status_code == 503
        assert (health.json()["status"], health.json()["ready"], health.json()["models"]) == ("starting", False, [])
        refused = await http.post(f"{node.url}/infer", content=request_event(node).to_json())
        assert code(refused) == (503, "no_capacity")
        assert "Retry-After" in refused.headers
        assert (await http.get(f"{node.url}/descriptor")).status_code == 503

        fake = FakeLlama()
        async with serve_app(fake.app(), port=port):
            deadline = asyncio.get_running_loop().time() + 15
            while (await http.get(f"{node.url}/health")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "the node never became ready"
                await asyncio.sleep(0.05)
            assert (await http.get(f"{node.url}/health")).json()["models"] == ["fake.gguf"]
            resp = await http.post(f"{node.url}/infer", content=request_event(node, max_tokens=5).to_json())
            assert resp.status_code == 200, resp.text
            answer = decode_payload(
                msgspec.json.decode(resp.content, type=NodeReply).response.content, InferenceResponse
            )
            assert (answer.output, answer.finish_reason) == ("".join(WORDS[:5]), "length")
            assert (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 5)


async def test_loading_runner_makes_the_node_answer_no_capacity(http: httpx.AsyncClient) -> None:
    fake = FakeLlama()
    async with fake_and_node(fake) as node:
        fake.mode = "loading"
        assert (await http.get(f"{node.url}/health")).json()["status"] == "degraded"
        resp = await http.post(f"{node.url}/infer", content=request_event(node).to_json())
        assert code(resp) == (503, "no_capacity")


@pytest.mark.parametrize("path", ["/infer", "/infer/stream"])
async def test_context_too_long_is_invalid_request(http: httpx.AsyncClient, path: str) -> None:
    async with fake_and_node(FakeLlama(mode="context")) as node:
        resp = await http.post(f"{node.url}{path}", content=request_event(node).to_json())
        assert code(resp) == (400, "invalid_request")
        assert "context window" in resp.json()["error"]["message"]


async def test_slow_runner_times_out(http: httpx.AsyncClient) -> None:
    async with fake_and_node(FakeLlama(mode="slow"), NODE_RUNNER_TIMEOUT_MS="300") as node:
        resp = await http.post(f"{node.url}/infer", content=request_event(node).to_json())
        assert code(resp) == (504, "upstream_timeout")
        resp = await http.post(f"{node.url}/infer/stream", content=request_event(node).to_json())
        assert code(resp) == (504, "upstream_timeout")


async def test_runner_dying_mid_stream_is_an_error_event(http: httpx.AsyncClient) -> None:
    async with fake_and_node(FakeLlama(mode="die")) as node:
        body = request_event(node).to_json()
        async with http.stream("POST", f"{node.url}/infer/stream", content=body) as resp:
            assert resp.status_code == 200
            events = await read_events(resp)
        assert [e.event for e in events] == ["chunk", "chunk", "error"]
        assert msgspec.json.decode(events[-1].data)["error"]["code"] == "upstream_error"
        unary = await http.post(f"{node.url}/infer", content=request_event(node).to_json())
        assert code(unary) == (502, "upstream_error")


async def test_router_hangup_reaches_the_model_server(http: httpx.AsyncClient) -> None:
    fake = FakeLlama(token_s=0.1)
    async with fake_and_node(fake, NODE_CAPACITY_MAX="1") as node:
        async with (
            httpx.AsyncClient(timeout=10) as doomed,
            doomed.stream("POST", f"{node.url}/infer/stream", content=request_event(node).to_json()) as resp,
        ):
            async for raw in resp.aiter_raw():
                if SSEDecoder().feed(raw):
                    break  # the first chunk, then hang up
        await eventually(lambda: fake.hangups == 1 and fake.open_streams == 0, within=2, what="llama-server hang-up")
        assert (await http.get(f"{node.url}/health")).json()["in_flight"] == 0


async def test_cancel_reaches_the_model_server(http: httpx.AsyncClient) -> None:
    fake = FakeLlama(token_s=0.05)
    async with fake_and_node(fake) as node:
        request = request_event(node)
        async with http.stream("POST", f"{node.url}/infer/stream", content=request.to_json()) as resp:
            decoder, events = SSEDecoder(), []
            async for raw in resp.aiter_raw():
                events.extend(decoder.feed(raw))
                if len(events) == 3:
                    cancel = seal(
                        ROUTER, Kind.INFER_CANCEL, InferCancel(request=request.id), to=node.keys.pubkey, nonce=True
                    )
                    assert (await http.post(f"{node.url}/infer/cancel", content=cancel.to_json())).status_code == 200
        await eventually(lambda: fake.hangups == 1, within=2, what="llama-server hang-up")
        reply = msgspec.json.decode(events[-1].data, type=NodeReply)
        answer = decode_payload(reply.response.content, InferenceResponse)
        chunks = [e for e in events if e.event == "chunk"]
        assert (answer.finish_reason, answer.usage.output_tokens) == ("cancelled", len(chunks))
        assert 3 <= len(chunks) < 30
