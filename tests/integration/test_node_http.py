"""The node's router-only `/infer` over real HTTP on loopback, acting as a router with a test key.

Every refusal returns its protocol status and code and leaves nothing behind: sending the same body again
gets the same answer (never `replay`), so a refused request never consumed its id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import nostr_sdk
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedai.protocol.envelope import open_event, seal
from fedai.protocol.event import Event, decode_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    NodeDescriptor,
    NodeReply,
    Pricing,
    decode_payload,
    price_msat,
    prompt_sha256,
)
from fedai.service.config import Env
from fedai_node.app import create_app
from fedai_node.config import NodeSettings, from_env
from fedai_node.runners import Runner, RunnerError
from fedai_node.runners.mock import MockRunner
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

ROUTER = Keys.generate()
MODEL = "fedai-mock-1"
PROMPT = "The node must never log or echo this sentence: violet kumquat ledger"


@dataclass
class Node:
    url: str
    keys: Keys
    settings: NodeSettings


def node_settings(keys: Keys, **env: str) -> NodeSettings:
    values = {
        "NODE_PRIVATE_KEY": keys.secret_hex,
        "ROUTER_PUBLIC_KEY": ROUTER.pubkey,
        "NODE_RUNNER": "mock",
        "NODE_MAX_REQUEST_BYTES": "16384",
        "NODE_MAX_PROMPT_BYTES": "2048",
        "NODE_MAX_TOKENS": "256",
    }
    values.update(env)
    return from_env(Env(values))


@asynccontextmanager
async def running_node(runner: Runner | None = None, **env: str) -> AsyncIterator[Node]:
    keys = Keys.generate()
    settings = node_settings(keys, **env)
    async with serve_app(create_app(settings, runner)) as url:
        yield Node(url, keys, settings)


@pytest.fixture(scope="module")
async def node() -> AsyncIterator[Node]:
    async with running_node() as n:
        yield n


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def request_event(
    to: str,
    *,
    signer: Keys = ROUTER,
    kind: int = Kind.INFER_REQUEST,
    created_at: int | None = None,
    expiration: int | None = None,
    **payload: Any,
) -> Event:
    fields: dict[str, Any] = {"model": MODEL, "prompt": PROMPT, "max_tokens": 32}
    fields.update(payload)
    req = InferenceRequest(**fields)
    return seal(signer, kind, req, to=to, nonce=True, created_at=created_at, expiration=expiration)


async def post(http: httpx.AsyncClient, node: Node, body: bytes | Event) -> httpx.Response:
    data = body.to_json() if isinstance(body, Event) else body
    return await http.post(f"{node.url}/infer", content=data, headers={"Content-Type": "application/json"})


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def metric(http: httpx.AsyncClient, node: Node, name: str, **labels: str) -> float:
    text = (await http.get(f"{node.url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# ---- the happy path ----------------------------------------------------------------------------------


async def test_signed_request_gets_both_signed_events(
    node: Node, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request = request_event(node.keys.pubkey)
    body = request.to_json()
    resp = await post(http, node, body)
    assert resp.status_code == 200, resp.text
    reply = msgspec.json.decode(resp.content, type=NodeReply)

    opened = open_event(
        reply.response,
        InferenceResponse,
        kinds={Kind.INFER_RESPONSE},
        recipient=ROUTER.pubkey,
        signers={node.keys.pubkey},
        reply_to=request.id,
    )
    metering = open_event(
        reply.metering,
        MeteringRecord,
        kinds={Kind.METERING_RECORD},
        recipient=ROUTER.pubkey,
        signers={node.keys.pubkey},
        reply_to=request.id,
    )
    # an independent implementation agrees on id and signature
    for event in (reply.response, reply.metering):
        assert nostr_sdk.Event.from_json(event.to_json().decode()).verify()

    req = decode_payload(request.content, InferenceRequest)
    expected = await MockRunner(MODEL, 4096).infer(req)
    answer = opened.payload
    assert (answer.model, answer.output, answer.finish_reason) == (MODEL, expected.output, expected.finish_reason)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (expected.input_tokens, expected.output_tokens)
    assert PROMPT not in answer.output

    record = metering.payload
    assert record.request == request.id
    assert record.response == reply.response.id
    assert record.model == MODEL
    assert (record.input_tokens, record.output_tokens) == (expected.input_tokens, expected.output_tokens)
    assert record.prompt_sha256 == prompt_sha256(req) == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert record.output_sha256 == hashlib.sha256(answer.output.encode()).hexdigest()
    assert record.price_msat == price_msat(
        Pricing(input_msat=1000, output_msat=2000), record.input_tokens, record.output_tokens
    )
    assert record.bytes_in == len(body)
    assert record.bytes_out == len(reply.response.to_json())
    assert record.wall_ms >= answer.latency_ms >= 0

    # the same event again is a replay
    again = await post(http, node, body)
    assert (again.status_code, error_code(again)) == (409, "replay")

    # one log line per request, with ids and counts and never the prompt, the output or a key
    lines = [r for r in caplog.records if r.name == "fedai_node" and r.getMessage() == "infer"]
    assert any(getattr(r, "request", None) == request.id[:12] and getattr(r, "status", None) == 200 for r in lines)
    logged = " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (PROMPT, answer.output, node.keys.secret_hex, node.keys.nsec):
        assert secret not in logged


async def test_chat_messages_are_served(node: Node, http: httpx.AsyncClient) -> None:
    request = request_event(
        node.keys.pubkey, prompt=None, messages=[{"role": "user", "content": PROMPT}], stop=["delta"]
    )
    resp = await post(http, node, request)
    assert resp.status_code == 200, resp.text
    reply = msgspec.json.decode(resp.content, type=NodeReply)
    answer = decode_payload(reply.response.content, InferenceResponse)
    assert "delta" not in answer.output
    record = decode_payload(reply.metering.content, MeteringRecord)
    assert record.prompt_sha256 == prompt_sha256(decode_payload(request.content, InferenceRequest))


# ---- refusals ----------------------------------------------------------------------------------------


def _drop_sig(e: Event) -> bytes:
    data = e.to_dict()
    del data["sig"]
    return msgspec.json.encode(data)


def _forged_id(e: Event) -> bytes:
    other = request_event(e.tag("p") or "", prompt="a different prompt")
    return msgspec.structs.replace(other, id=e.id, sig=e.sig).to_json()


def _bad_sig(e: Event) -> bytes:
    other = request_event(e.tag("p") or "")
    return msgspec.structs.replace(e, sig=other.sig).to_json()


def _payload_missing_fields(to: str) -> bytes:
    return seal(ROUTER, Kind.INFER_REQUEST, '{"model":"fedai-mock-1"}', to=to, nonce=True).to_json()


def _deep_content(to: str) -> bytes:
    deep = "[" * 3000 + "]" * 3000  # deep enough to overflow a recursive parser, small enough for the body limit
    content = '{"model": "fedai-mock-1", "prompt": "x", "max_tokens": 1, "extra": ' + deep + "}"
    return seal(ROUTER, Kind.INFER_REQUEST, content, to=to, nonce=True).to_json()


now = lambda: int(time.time())  # noqa: E731

REFUSALS: list[tuple[str, Callable[[str], bytes], int, str]] = [
    ("malformed json", lambda to: b"{not json", 400, "invalid_json"),
    ("truncated json", lambda to: request_event(to).to_json()[:-40], 400, "invalid_json"),
    ("event missing sig", lambda to: _drop_sig(request_event(to)), 400, "invalid_event"),
    ("payload missing fields", _payload_missing_fields, 400, "invalid_event"),
    ("deep json body", lambda to: b"[" * 3000 + b"]" * 3000, 400, "invalid_json"),
    ("deep json payload", _deep_content, 400, "invalid_event"),
    ("wrong kind", lambda to: request_event(to, kind=Kind.QUOTE_REQUEST).to_json(), 400, "invalid_event"),
    ("forged id", lambda to: _forged_id(request_event(to)), 400, "invalid_event"),
    ("bad signature", lambda to: _bad_sig(request_event(to)), 401, "invalid_signature"),
    ("stale", lambda to: request_event(to, created_at=now() - 120).to_json(), 401, "stale"),
    ("future", lambda to: request_event(to, created_at=now() + 120).to_json(), 401, "stale"),
    ("expired", lambda to: request_event(to, expiration=now() - 1).to_json(), 401, "expired"),
    ("wrong recipient", lambda to: request_event(Keys.generate().pubkey).to_json(), 403, "wrong_recipient"),
    ("untrusted signer", lambda to: request_event(to, signer=Keys.generate()).to_json(), 403, "forbidden"),
    ("body over limit", lambda to: request_event(to, prompt="x" * 17000).to_json(), 413, "too_large"),
    ("prompt over limit", lambda to: request_event(to, prompt="x" * 3000).to_json(), 413, "too_large"),
    ("max_tokens over limit", lambda to: request_event(to, max_tokens=257).to_json(), 400, "invalid_request"),
    ("unknown model", lambda to: request_event(to, model="no-such-model").to_json(), 404, "unknown_model"),
    ("streaming", lambda to: request_event(to, stream=True).to_json(), 400, "invalid_request"),
]


@pytest.mark.parametrize(("case", "build", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusals(
    node: Node, http: httpx.AsyncClient, case: str, build: Callable[[str], bytes], status: int, code: str
) -> None:
    body = build(node.keys.pubkey)
    resp = await post(http, node, body)
    assert (resp.status_code, error_code(resp)) == (status, code), resp.text
    assert resp.headers["content-type"].startswith("application/json")
    again = await post(http, node, body)
    assert (again.status_code, error_code(again)) == (status, code)


async def test_refusals_are_counted_and_node_still_serves(node: Node, http: httpx.AsyncClient) -> None:
    assert await metric(http, node, "fedai_node_requests_total", code="stale") >= 2
    resp = await post(http, node, request_event(node.keys.pubkey))
    assert resp.status_code == 200
    assert await metric(http, node, "fedai_node_requests_total", code="ok") >= 1
    assert await metric(http, node, "fedai_node_tokens_total", direction="out") > 0
    assert await metric(http, node, "fedai_node_request_seconds_count") >= 1


async def test_only_post(node: Node, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{node.url}/infer")).status_code == 405


# ---- capacity, timeouts, runner failures --------------------------------------------------------------


async def test_capacity_exceeded_then_same_event_accepted(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_CAPACITY_MAX="1", NODE_MOCK_DELAY_MS="300") as n:
        first, second = request_event(n.keys.pubkey), request_event(n.keys.pubkey)
        responses = await asyncio.gather(post(http, n, first), post(http, n, second))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 429]
        refused = next(r for r in responses if r.status_code == 429)
        assert error_code(refused) == "capacity_exceeded"
        assert refused.json()["error"]["retry_after_ms"] == 1000
        assert refused.headers["Retry-After"] == "1"
        # the refused event did not consume its id: sent again as is, it is served
        refused_event = first if responses[0].status_code == 429 else second
        retry = await post(http, n, refused_event)
        assert retry.status_code == 200, retry.text
        health = (await http.get(f"{n.url}/health")).json()
        assert (health["in_flight"], health["capacity"]) == (0, 1)


async def test_runner_timeout(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_RUNNER_TIMEOUT_MS="50", NODE_MOCK_DELAY_MS="2000") as n:
        started = time.monotonic()
        resp = await post(http, n, request_event(n.keys.pubkey))
        assert (resp.status_code, error_code(resp)) == (504, "upstream_timeout")
        assert time.monotonic() - started < 1.5
        assert (await http.get(f"{n.url}/health")).json()["in_flight"] == 0


class BrokenRunner(MockRunner):
    """The mock runner with a failing backend: `infer` raises, `health` says no."""

    def __init__(self, error: Exception) -> None:
        super().__init__(MODEL, 4096)
        self.error = error

    async def infer(self, req: InferenceRequest) -> Any:
        raise self.error

    async def health(self) -> bool:
        return False


async def test_runner_error_and_degraded_health(http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    async with running_node(BrokenRunner(RunnerError("backend said 500"))) as n:
        resp = await post(http, n, request_event(n.keys.pubkey))
        assert (resp.status_code, error_code(resp)) == (502, "upstream_error")
        health = await http.get(f"{n.url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["runner_ok"] is False
        assert "Retry-After" in health.headers
    async with running_node(BrokenRunner(KeyError("violet kumquat"))) as n:
        caplog.set_level(logging.INFO)
        resp = await post(http, n, request_event(n.keys.pubkey))
        assert (resp.status_code, error_code(resp)) == (500, "internal")
        assert "kumquat" not in resp.text
        assert any(getattr(r, "error_type", None) == "KeyError" for r in caplog.records)
        assert "kumquat" not in " ".join(str(r.__dict__) for r in caplog.records)


# ---- health, descriptor, metrics ----------------------------------------------------------------------


async def test_health(node: Node, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{node.url}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["pubkey"] == node.keys.pubkey
    assert body["runner"] == "mock"
    assert body["runner_ok"] is True
    assert body["capacity"] == 4
    assert body["in_flight"] == 0
    assert body["version"]


async def test_descriptor_is_a_signed_announce(node: Node, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{node.url}/descriptor")
    assert resp.status_code == 200
    event = decode_event(resp.content)
    verify_event(event)
    assert nostr_sdk.Event.from_json(resp.text).verify()
    assert event.kind == Kind.NODE_ANNOUNCE
    assert event.pubkey == node.keys.pubkey
    assert ["d", "fedai-node"] in event.tags
    assert ["t", "fedai"] in event.tags
    assert ["model", MODEL] in event.tags
    descriptor = decode_payload(event.content, NodeDescriptor)
    assert descriptor.endpoint == node.settings.endpoint
    assert descriptor.capacity.max_concurrent == 4
    [model] = descriptor.models
    assert (model.id, model.max_tokens, model.context_window) == (MODEL, 256, 4096)
    assert (model.pricing.input_msat, model.pricing.output_msat) == (1000, 2000)


# ---- replay across replicas sharing Postgres ----------------------------------------------------------


async def test_replay_guard_in_postgres_holds_across_processes(database_url: str, http: httpx.AsyncClient) -> None:
    keys = Keys.generate()
    settings = node_settings(keys, NODE_DB_URL=database_url)
    async with serve_app(create_app(settings)) as a, serve_app(create_app(settings)) as b:
        node_a, node_b = Node(a, keys, settings), Node(b, keys, settings)
        request = request_event(keys.pubkey)
        assert (await post(http, node_a, request)).status_code == 200
        resp = await post(http, node_b, request)
        assert (resp.status_code, error_code(resp)) == (409, "replay")
        refused = request_event(keys.pubkey, model="no-such-model")
        assert (await post(http, node_a, refused)).status_code == 404
        assert (await post(http, node_b, refused)).status_code == 404
