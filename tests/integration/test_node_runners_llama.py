"""The node in front of the REAL llama-server (tiny random-weight model, 4 slots of 1024 tokens), in both of
its modes: native (`NODE_RUNNER=llama_cpp`, /completion + /apply-template) and OpenAI-compatible
(`NODE_RUNNER=openai`, /v1/completions + /v1/chat/completions). Greedy decoding makes both modes produce the
same tokens, which checks the two request paths against each other."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

from fedai.llamacpp import LlamaServer
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    NodeDescriptor,
    NodeReply,
    StreamChunk,
    decode_payload,
)
from fedai.service.config import ConfigError, Env
from fedai.service.sse import SSEDecoder, SSEvent
from fedai_node.app import create_app
from fedai_node.config import from_env
from tests.support.servers import free_port, serve_app

pytestmark = pytest.mark.integration

ROUTER = Keys.generate()
MODES = ["llama_cpp", "openai"]
SLOT_CONTEXT = 1024  # tests/support/llama.py: TINY_SLOT_CONTEXT


@dataclass
class Node:
    url: str
    keys: Keys


def env_for(keys: Keys, runner: str, url: str, **extra: str) -> dict[str, str]:
    return {
        "NODE_PRIVATE_KEY": keys.secret_hex,
        "ROUTER_PUBLIC_KEY": ROUTER.pubkey,
        "NODE_RUNNER": runner,
        "NODE_RUNNER_URL": url,
        "NODE_RUNNER_TIMEOUT_MS": "20000",
        **extra,
    }


@contextlib.asynccontextmanager
async def node_for(runner: str, url: str, **extra: str) -> AsyncIterator[Node]:
    keys = Keys.generate()
    async with serve_app(create_app(from_env(Env(env_for(keys, runner, url, **extra))))) as node_url:
        yield Node(node_url, keys)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def request_event(node: Node, model: str, **payload: Any) -> Event:
    fields: dict[str, Any] = {"model": model, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.0}
    fields.update(payload)
    return seal(ROUTER, Kind.INFER_REQUEST, InferenceRequest(**fields), to=node.keys.pubkey, nonce=True)


def opened_reply(data: bytes, node: Node, request: Event) -> tuple[InferenceResponse, MeteringRecord]:
    reply = msgspec.json.decode(data, type=NodeReply)
    checks: dict[str, Any] = {"recipient": ROUTER.pubkey, "signers": {node.keys.pubkey}, "reply_to": request.id}
    answer = open_event(reply.response, InferenceResponse, kinds={Kind.INFER_RESPONSE}, **checks).payload
    record = open_event(reply.metering, MeteringRecord, kinds={Kind.METERING_RECORD}, **checks).payload
    assert record.output_sha256 == hashlib.sha256(answer.output.encode()).hexdigest()
    assert (record.input_tokens, record.output_tokens) == (answer.usage.input_tokens, answer.usage.output_tokens)
    return answer, record


async def infer(http: httpx.AsyncClient, node: Node, request: Event) -> InferenceResponse:
    resp = await http.post(f"{node.url}/infer", content=request.to_json())
    assert resp.status_code == 200, resp.text
    return opened_reply(resp.content, node, request)[0]


async def stream(http: httpx.AsyncClient, node: Node, request: Event) -> tuple[list[str], InferenceResponse]:
    decoder, events = SSEDecoder(), list[SSEvent]()
    async with http.stream("POST", f"{node.url}/infer/stream", content=request.to_json()) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for raw in resp.aiter_raw():
            events.extend(decoder.feed(raw))
    *chunks, done = events
    assert done.event == "done", done
    deltas = []
    for seq, chunk in enumerate(chunks):
        assert chunk.event == "chunk"
        payload = open_event(
            decode_event(chunk.data),
            StreamChunk,
            kinds={Kind.STREAM_CHUNK},
            recipient=ROUTER.pubkey,
            signers={node.keys.pubkey},
            reply_to=request.id,
        ).payload
        assert payload.seq == seq
        deltas.append(payload.delta)
    answer, _ = opened_reply(done.data, node, request)
    assert "".join(deltas) == answer.output
    return deltas, answer


# ---- serving -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_discovery_health_and_descriptor(
    tiny_llama_server: LlamaServer, http: httpx.AsyncClient, mode: str
) -> None:
    async with node_for(mode, tiny_llama_server.url) as node:
        health = await http.get(f"{node.url}/health")
        assert health.status_code == 200
        assert (health.json()["runner"], health.json()["models"]) == (mode, [tiny_llama_server.model_id])
        descriptor = decode_payload(
            decode_event((await http.get(f"{node.url}/descriptor")).content).content, NodeDescriptor
        )
        [model] = descriptor.models
        assert (model.id, model.context_window) == (tiny_llama_server.model_id, SLOT_CONTEXT)


async def test_both_modes_serve_the_same_tokens_with_usage(
    tiny_llama_server: LlamaServer, http: httpx.AsyncClient
) -> None:
    model = tiny_llama_server.model_id
    assert model is not None
    seen: dict[str, list[Any]] = {}
    for mode in MODES:
        async with node_for(mode, tiny_llama_server.url) as node:
            unary = await infer(http, node, request_event(node, model))
            deltas, streamed = await stream(http, node, request_event(node, model))
            chat = request_event(node, model, prompt=None, messages=[{"role": "user", "content": "Hello there"}])
            chat_deltas, chatted = await stream(http, node, chat)
            for answer in (unary, streamed, chatted):
                assert answer.model == model
                assert answer.finish_reason in ("stop", "length")
                assert answer.usage.input_tokens > 0
                assert 0 < answer.usage.output_tokens <= 12
            assert (unary.output, unary.usage) == (streamed.output, streamed.usage)  # greedy: deterministic
            assert len(deltas) > 1  # streamed token by token, not as one piece
            assert len(chat_deltas) > 1
            seen[mode] = [streamed.output, streamed.usage, chatted.output, chatted.usage]
    # native /completion (+ /apply-template for chat) and /v1 agree on the text and on the server's usage
    assert seen["llama_cpp"] == seen["openai"]


async def test_openai_mode_accepts_the_v1_base(tiny_llama_server: LlamaServer, http: httpx.AsyncClient) -> None:
    async with node_for("openai", tiny_llama_server.url + "/v1") as node:
        answer = await infer(http, node, request_event(node, str(tiny_llama_server.model_id), max_tokens=3))
        assert answer.usage.output_tokens <= 3


# ---- refusals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_model_and_context_too_long(
    tiny_llama_server: LlamaServer, http: httpx.AsyncClient, mode: str
) -> None:
    async with node_for(mode, tiny_llama_server.url) as node:
        resp = await http.post(f"{node.url}/infer", content=request_event(node, "no-such-model").to_json())
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "unknown_model")
        # 2,800 bytes pass the node's estimate (700 tokens) but are ~2,800 tokens for this vocabulary:
        # llama-server refuses them (exceed_context_size_error) and the node says why, without the text
        long_prompt = "~^" * 1400
        for path in ("/infer", "/infer/stream"):
            request = request_event(node, str(tiny_llama_server.model_id), prompt=long_prompt)
            resp = await http.post(f"{node.url}{path}", content=request.to_json())
            assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_request"), resp.text
            message = resp.json()["error"]["message"]
            assert message.startswith("runner: ") and "n_ctx=1024" in message, message  # the server's refusal
            assert long_prompt[:20] not in resp.text


@pytest.mark.parametrize("mode", MODES)
async def test_runner_down_at_start_is_not_ready(http: httpx.AsyncClient, mode: str) -> None:
    async with node_for(mode, f"http://127.0.0.1:{free_port()}") as node:
        health = await http.get(f"{node.url}/health")
        assert health.status_code == 503
        assert (health.json()["ready"], health.json()["runner_ok"]) == (False, False)
        resp = await http.post(f"{node.url}/infer", content=request_event(node, "any").to_json())
        assert (resp.status_code, resp.json()["error"]["code"]) == (503, "no_capacity")


@pytest.mark.parametrize("mode", MODES)
async def test_runner_url_outside_the_allowlist_is_refused_at_start(tiny_llama_server: LlamaServer, mode: str) -> None:
    keys = Keys.generate()
    env = env_for(
        keys,
        mode,
        tiny_llama_server.url,
        NODE_SANDBOX_ALLOWED_ENDPOINTS="http://127.0.0.1:1",
        NODE_PORT=str(free_port()),
    )
    with pytest.raises(ConfigError, match="NODE_SANDBOX_ALLOWED_ENDPOINTS"):
        from_env(Env(env))
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fedai_node"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 2
    assert "NODE_SANDBOX_ALLOWED_ENDPOINTS" in child.stderr
    assert keys.secret_hex not in child.stderr + child.stdout
