"""Checking OpenAI-compatible answers as a client developer does: the official `openai` package against a real
router on loopback, `verify_completion` / `verify_stream` with the router's key in every form (npub, hex, upper
case), streams verified from exactly what was passed to `create(...)`, and options the edge refuses by name."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from fedai.protocol.keys import Keys, npub
from fedai.sdk.errors import ChainError, InvalidRequest
from fedai.sdk.openai import NostrAuth, verify_completion, verify_stream
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

API_KEY = "fk-verify-0123456789abcdef"
API_CLIENT = Keys.generate()
ASK = {"model": "fake-model", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    keys = {hashlib.sha256(API_KEY.encode()).hexdigest(): API_CLIENT.pubkey}
    async with running_router(database_url, api_keys=keys) as running:
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(running.url, running.pubkey, node.keys, node.descriptor())).status_code == 200
            yield running


def _key_forms(router: RunningRouter) -> list[str]:
    return [router.pubkey, npub(router.pubkey), router.pubkey.upper(), f"  {npub(router.pubkey)}\n"]


def _api_key_client(router: RunningRouter) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=API_KEY, max_retries=0)


async def test_an_api_key_answer_verifies_with_the_routers_key_in_every_form(router: RunningRouter) -> None:
    async with _api_key_client(router) as client:
        completion = await client.chat.completions.create(**ASK)  # type: ignore[call-overload]
    for form in _key_forms(router):
        chain = verify_completion(completion, form, ASK)  # the openai object itself, or its dict
        assert chain.router == router.pubkey and chain.output == completion.choices[0].message.content
        assert verify_completion(completion.model_dump(), form, ASK).node == chain.node


async def test_a_nip98_answer_verifies_with_the_npub(router: RunningRouter) -> None:
    keys = Keys.generate()
    http = httpx.AsyncClient(auth=NostrAuth(keys.nsec))
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused", http_client=http) as client:
        completion = await client.chat.completions.create(**ASK)  # type: ignore[call-overload]
    chain = verify_completion(completion, npub(router.pubkey), ASK)
    assert chain.request.pubkey == keys.pubkey


async def test_another_routers_key_still_fails_and_a_non_key_is_invalid(router: RunningRouter) -> None:
    async with _api_key_client(router) as client:
        completion = await client.chat.completions.create(**ASK)  # type: ignore[call-overload]
    with pytest.raises(ChainError, match="signed by another key"):
        verify_completion(completion, Keys.generate().npub, ASK)
    with pytest.raises(InvalidRequest, match="router_pubkey"):
        verify_completion(completion, "npub1notakey", ASK)


async def _stream(router: RunningRouter, request: dict[str, Any]) -> list[Any]:
    async with _api_key_client(router) as client:
        stream = await client.chat.completions.create(**request)  # type: ignore[call-overload]
        return [chunk async for chunk in stream]


async def test_a_stream_verifies_from_exactly_what_was_passed_to_create(router: RunningRouter) -> None:
    request = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await _stream(router, request)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha bravo charlie delta echo foxtrot"
    for form in _key_forms(router)[:2]:
        assert verify_stream(chunks, form, request).output == text
    # the same parameters without the stream options verify too: a stream implies `stream: true`
    assert verify_stream([c.model_dump() for c in chunks], npub(router.pubkey), ASK).output == text
    final = next(c for c in chunks if c.model_dump().get("fedai"))
    assert verify_completion(final, router.pubkey, ASK, output=text).output == text


async def test_a_stream_with_a_changed_text_or_request_fails(router: RunningRouter) -> None:
    chunks = [c.model_dump() for c in await _stream(router, {**ASK, "stream": True})]
    with pytest.raises(ChainError, match="forwarded request"):
        verify_stream(chunks, router.pubkey, {**ASK, "max_tokens": 17})
    first = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
    first["choices"][0]["delta"]["content"] = "omega "
    with pytest.raises(ChainError, match="not the output the node signed"):
        verify_stream(chunks, router.pubkey, ASK)
    with pytest.raises(ChainError, match="no chunk"):
        verify_stream([c for c in chunks if not c.get("fedai")], router.pubkey, ASK)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]),
        ("tool_choice", "required"),
        ("functions", [{"name": "add", "parameters": {"type": "object"}}]),
    ],
)
async def test_the_edge_refuses_what_it_cannot_honour_in_openais_shape(
    router: RunningRouter, option: str, value: Any
) -> None:
    async with _api_key_client(router) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(**ASK, **{option: value})  # type: ignore[call-overload]
    assert refused.value.status_code == 400
    assert refused.value.param == option and refused.value.code == "invalid_request"
    assert refused.value.type == "invalid_request_error"
    assert refused.value.body["message"].startswith(f"{option}: ")  # type: ignore[index]
