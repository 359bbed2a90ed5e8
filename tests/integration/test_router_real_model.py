"""End to end on a real model: the router in front of two nodes running the llama_cpp and openai runners on
the same real llama-server (tiny model), one of them with its runner down at start. Unary, streamed and
OpenAI-shaped answers all verify; the node whose runner is down is never used."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from fedai.llamacpp import LlamaServer
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from fedai.sdk.openai import NostrAuth
from fedai.service.config import Env
from fedai_node.app import create_app
from fedai_node.config import from_env
from tests.support.router import RunningRouter
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


def _node_env(router: RunningRouter, runner: str, runner_url: str, port: int) -> dict[str, str]:
    return {
        "NODE_PRIVATE_KEY": Keys.generate().secret_hex,
        "ROUTER_PUBLIC_KEY": router.pubkey,
        "NODE_RUNNER": runner,
        "NODE_RUNNER_URL": runner_url,
        "NODE_PORT": str(port),
        "NODE_ENDPOINT": f"http://127.0.0.1:{port}",
        "ROUTER_ENDPOINT": router.url,
        "NODE_HEARTBEAT_MS": "200",
        "NODE_CAPACITY_MAX": "2",
        "NODE_MAX_TOKENS": "64",
    }


@pytest.fixture
async def fleet(router: RunningRouter, tiny_llama_server: LlamaServer) -> AsyncIterator[dict[str, str]]:
    """Three nodes: llama_cpp and openai runners on the real server, and one whose runner is down."""
    dead = f"http://127.0.0.1:{free_port()}"
    specs = {
        "native": ("llama_cpp", tiny_llama_server.url),
        "openai": ("openai", tiny_llama_server.url),
        "down": ("llama_cpp", dead),
    }
    keys: dict[str, str] = {}
    servers = []
    try:
        for name, (runner, url) in specs.items():
            port = free_port()
            settings = from_env(Env(_node_env(router, runner, url, port)))
            keys[name] = settings.keys.pubkey
            cm = serve_app(create_app(settings), port=port)
            await cm.__aenter__()
            servers.append(cm)
        await eventually(
            lambda: {keys["native"], keys["openai"]} <= set(router.service.registry.nodes),
            within=20,
            what="both working nodes registered",
        )
        yield keys
    finally:
        for cm in reversed(servers):
            await cm.__aexit__(None, None, None)


async def test_unary_stream_and_openai_answers_on_a_real_model(
    router: RunningRouter, fleet: dict[str, str], tiny_llama_server: LlamaServer
) -> None:
    model = tiny_llama_server.model_id
    assert model is not None
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        unary = await client.infer(model, messages=[{"role": "user", "content": "hello"}], max_tokens=16)
        stream = await client.stream(model, "Once upon a time", max_tokens=24)
        deltas = [d async for d in stream]
    assert unary.node in (fleet["native"], fleet["openai"]) and unary.record.output_tokens > 0
    assert len(deltas) > 1 and "".join(deltas) == stream.chain.output  # really streamed, really verified
    async with openai.AsyncOpenAI(
        base_url=router.url + "/v1", api_key="unused", http_client=httpx.AsyncClient(auth=NostrAuth(Keys.generate()))
    ) as oai:
        completion = await oai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert fleet["down"] not in router.service.registry.nodes  # a node whose runner is down never registers
    async with httpx.AsyncClient() as http:
        status = (await http.get(router.url + "/status", headers=router.admin)).json()
    assert {n["pubkey"] for n in status["nodes"]} == {fleet["native"], fleet["openai"]}
