"""The router in front of the real node service: the node's limits reach the client as the node's typed
error (not a 502), and a node outside ROUTER_PUBLIC_KEY trust is never served through."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from fedai_node.descriptor import build_descriptor
from fedai_node.runners import RunnerModel
from tests.support.fake_node import register
from tests.support.router import ADMIN_TOKEN, RunningRouter
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually


@pytest.fixture
async def node(router: RunningRouter) -> AsyncIterator[NodeSettings]:
    port = free_port()
    settings = NodeSettings(
        keys=Keys.generate(),
        router_pubkeys=frozenset({router.pubkey}),
        runner="mock",
        port=port,
        endpoint=f"http://127.0.0.1:{port}",
        router_endpoints=(router.url,),
        max_prompt_bytes=200,
        max_tokens=64,
        heartbeat_ms=200,
        model_aliases=("mock-small",),
    )
    async with serve_app(create_app(settings), port=port):
        await eventually(lambda: settings.keys.pubkey in router.service.registry.nodes, what="node registered")
        yield settings


async def test_round_trip_through_the_real_node(router: RunningRouter, node: NodeSettings) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fedai-mock-1", "What is 2+2?", max_tokens=16)
    assert chain.node == node.keys.pubkey
    assert chain.record.output_tokens == chain.result.usage.output_tokens > 0


async def test_a_model_alias_routes_to_the_node_and_is_answered_by_the_model_id(
    router: RunningRouter, node: NodeSettings
) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey, admin_token=ADMIN_TOKEN) as client:
        chain = await client.infer("mock-small", "What is 2+2?", max_tokens=16)
        status = await client.status()
    assert chain.node == node.keys.pubkey
    assert chain.result.model == chain.record.model == "fedai-mock-1"
    assert status["nodes"][0]["aliases"] == ["mock-small"]


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "status", "code"),
    [
        ("x" * 500, 16, 413, "too_large"),  # NODE_MAX_PROMPT_BYTES = 200
        ("hi", 60, 200, None),
    ],
)
async def test_node_limits_reach_the_client(
    router: RunningRouter, node: NodeSettings, prompt: str, max_tokens: int, status: int, code: str | None
) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        if code is None:
            assert (await client.infer("fedai-mock-1", prompt, max_tokens=max_tokens)).output
            return
        with pytest.raises(FedaiError) as err:
            await client.infer("fedai-mock-1", prompt, max_tokens=max_tokens)
    assert (err.value.status, err.value.code) == (status, code)


async def test_max_tokens_over_the_advertised_limit_is_refused_before_dispatch(
    router: RunningRouter, node: NodeSettings
) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer("fedai-mock-1", "hi", max_tokens=65)  # the node advertises max_tokens 64
    assert (err.value.status, err.value.code) == (400, "invalid_request")


async def test_node_that_does_not_trust_this_router_is_skipped(router: RunningRouter) -> None:
    """A node registered with the router but trusting another key refuses the forwarded request (403):
    the router treats that as the node's fault and reports an upstream error, never a forged answer."""
    port = free_port()
    settings = NodeSettings(
        keys=Keys.generate(),
        router_pubkeys=frozenset({Keys.generate().pubkey}),
        runner="mock",
        port=port,
        endpoint=f"http://127.0.0.1:{port}",
    )
    async with serve_app(create_app(settings), port=port):
        model = RunnerModel(id="fedai-mock-1", context_window=4096, max_tokens=1024)
        descriptor = build_descriptor(settings, [model], 0, {})
        assert (await register(router.url, router.pubkey, settings.keys, descriptor)).status_code == 200
        async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            with pytest.raises(FedaiError) as err:
                await client.infer("fedai-mock-1", "hi", max_tokens=8)
    assert (err.value.status, err.value.code) == (502, "upstream_error")
    assert "forbidden" in err.value.message or "signer" in err.value.message
