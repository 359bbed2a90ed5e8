"""The OpenAI-compatible edge, driven by the official `openai` package: chat and text completions, streaming
with usage, NIP-98 and API-key authentication (and their failures), errors in OpenAI's shape, and the signed
chain riding along every answer."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import openai
import pytest

from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from fedai.sdk.openai import NostrAuth, verify_completion
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

API_KEY = "fk-test-0123456789abcdef"
API_CLIENT = Keys.generate()


@pytest.fixture
async def edge(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningRouter, FakeNode]]:
    await reset_database(db_pool)
    keys = {hashlib.sha256(API_KEY.encode()).hexdigest(): API_CLIENT.pubkey}
    async with running_router(database_url, api_keys=keys) as router:
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            yield router, node


def _nip98_client(router: RunningRouter, keys: Keys) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=router.url + "/v1", api_key="unused", http_client=httpx.AsyncClient(auth=NostrAuth(keys))
    )


async def test_chat_completion_with_nip98_and_its_chain(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, node = edge
    keys = Keys.generate()
    params = {"model": "fake-model", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}
    async with _nip98_client(router, keys) as client:
        completion = await client.chat.completions.create(**params)  # type: ignore[call-overload]
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "fake answer 1"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    chain = verify_completion(completion.model_dump(), router.pubkey, params)
    assert chain.node == node.keys.pubkey
    assert chain.request.pubkey == keys.pubkey and chain.request.kind == KIND_HTTP_AUTH


async def test_text_completion_with_an_api_key(edge: tuple[RunningRouter, FakeNode], db_pool: asyncpg.Pool) -> None:
    router, _ = edge
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=API_KEY) as client:
        completion = await client.completions.create(model="fake-model", prompt="Say hi", max_tokens=8)
        raw = await client.completions.with_raw_response.create(model="fake-model", prompt="Again", max_tokens=8)
    assert completion.choices[0].text == "fake answer 1"
    chain = verify_completion(
        completion.model_dump(),
        router.pubkey,
        {"model": "fake-model", "prompt": "Say hi", "max_tokens": 8},
        kind="text",
    )
    assert chain.record.input_tokens == 3
    metering = await db_pool.fetchrow("SELECT client FROM metering_records ORDER BY created_at LIMIT 1")
    assert metering["client"] == API_CLIENT.pubkey  # metered to the key's owner
    chain_id = raw.headers["x-fedai-chain-id"]
    async with httpx.AsyncClient() as http:
        fetched = await http.get(router.url + f"/v1/chains/{chain_id}", headers={"Authorization": f"Bearer {API_KEY}"})
        other = await http.get(
            router.url + f"/v1/chains/{chain_id}",
            headers={"Authorization": auth_header(Keys.generate(), "GET", router.url + f"/v1/chains/{chain_id}")},
        )
    assert fetched.status_code == 200 and fetched.json()["answer"]["id"] == chain_id
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")


async def test_streaming_chat_with_usage(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, _ = edge
    params = {"model": "fake-model", "messages": [{"role": "user", "content": "stream please"}], "max_tokens": 16}
    deltas: list[str] = []
    last: dict[str, object] = {}
    usage = None
    async with _nip98_client(router, Keys.generate()) as client:
        stream = await client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                last = chunk.model_dump()
            if chunk.usage is not None:
                usage = chunk.usage
    assert "".join(deltas) == "alpha bravo charlie delta echo foxtrot"
    assert usage is not None and usage.completion_tokens == 3
    chain = verify_completion(last, router.pubkey, {**params, "stream": True}, output="".join(deltas))
    assert chain.output == "".join(deltas)


async def test_models_lists_the_federation(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, _ = edge
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=API_KEY) as client:
        models = await client.models.list()
    entry = models.data[0].model_dump()
    assert entry["id"] == "fake-model"
    assert entry["fedai"]["nodes"] == 1 and entry["fedai"]["pricing"]["input_msat"] == 1000


async def test_errors_in_openai_shape(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, _ = edge
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="fake-model", messages=[])
    assert missing.value.body["code"] == "unknown_model"  # type: ignore[index]
    assert bad.value.body["code"] == "invalid_request"  # type: ignore[index]
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="fk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as auth:
            await client.completions.create(model="fake-model", prompt="x")
    assert auth.value.body["code"] == "unauthorized"  # type: ignore[index]


def _header(
    keys: Keys,
    url: str,
    body: bytes,
    *,
    method: str = "POST",
    created_at: int | None = None,
    payload: str | None = None,
) -> str:
    tags = [["u", url], ["method", method]]
    tags.append(["payload", payload if payload is not None else hashlib.sha256(body).hexdigest()])
    event = sign_event(keys, KIND_HTTP_AUTH, "", tags, created_at=created_at)
    return "Nostr " + base64.b64encode(event.to_json()).decode()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_url", 401, "auth_url_mismatch"),
        ("wrong_method", 401, "auth_method_mismatch"),
        ("wrong_payload", 401, "auth_payload_mismatch"),
        ("stale", 401, "stale"),
        ("not_base64", 401, "invalid_auth"),
        ("no_header", 401, "unauthorized"),
    ],
)
async def test_nip98_failures(edge: tuple[RunningRouter, FakeNode], case: str, status: int, code: str) -> None:
    router, node = edge
    url = router.url + "/v1/chat/completions"
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}).encode()
    keys = Keys.generate()
    headers = {
        "wrong_url": {"Authorization": _header(keys, router.url + "/v1/completions", body)},
        "wrong_method": {"Authorization": _header(keys, url, body, method="PUT")},
        "wrong_payload": {"Authorization": _header(keys, url, body, payload="0" * 64)},
        "stale": {"Authorization": _header(keys, url, body, created_at=int(time.time()) - 600)},
        "not_base64": {"Authorization": "Nostr %%%"},
        "no_header": {},
    }[case]
    async with httpx.AsyncClient() as http:
        resp = await http.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
    assert (resp.status_code, resp.json()["error"]["code"]) == (status, code)
    assert resp.json()["error"]["type"] == "authentication_error"
    assert "Nostr" in resp.headers["www-authenticate"]
    assert node.calls == 0


async def test_nip98_replay_is_refused(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, node = edge
    url = router.url + "/v1/chat/completions"
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}).encode()
    header = {"Authorization": _header(Keys.generate(), url, body), "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        first = await http.post(url, content=body, headers=header)
        again = await http.post(url, content=body, headers=header)
    assert first.status_code == 200
    assert (again.status_code, again.json()["error"]["code"]) == (409, "replay")
    assert node.calls == 1


async def test_tampered_answer_fails_verification(edge: tuple[RunningRouter, FakeNode]) -> None:
    router, _ = edge
    params = {"model": "fake-model", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}
    async with _nip98_client(router, Keys.generate()) as client:
        completion = (await client.chat.completions.create(**params)).model_dump()  # type: ignore[call-overload]
    completion["choices"][0]["message"]["content"] = "5"
    with pytest.raises(Exception, match="not the output the node signed"):
        verify_completion(completion, router.pubkey, params)
    with pytest.raises(Exception, match="forwarded request"):
        verify_completion(completion, router.pubkey, {**params, "max_tokens": 17})
