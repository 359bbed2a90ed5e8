# Long but one concept: the node's /infer/stream and /infer/cancel, every outcome over real HTTP.
"""`/infer/stream` and `/infer/cancel` over real HTTP on loopback, acting as a router with a test key.

The mock runner streams one word every NODE_MOCK_TOKEN_MS, so "the first chunk arrives before generation
ends" is measured, not assumed; cancellation and disconnects are checked on the runner's side too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import nostr_sdk
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    Ack,
    InferCancel,
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    NodeReply,
    StreamChunk,
    decode_payload,
    prompt_sha256,
)
from fedai.service.config import Env
from fedai.service.sse import SSEDecoder, SSEvent
from fedai_node.app import create_app
from fedai_node.config import NodeSettings, from_env
from fedai_node.runners import Runner, RunnerError, RunnerResult, StreamItem
from fedai_node.runners.mock import MockRunner
from tests.support.servers import serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

ROUTER = Keys.generate()
OTHER_ROUTER = Keys.generate()
MODEL = "fedai-mock-1"
PROMPT = "Streams must never log this sentence: saffron quokka ledger"


@dataclass
class Node:
    url: str
    keys: Keys
    settings: NodeSettings


def node_settings(keys: Keys, **env: str) -> NodeSettings:
    values = {
        "NODE_PRIVATE_KEY": keys.secret_hex,
        "ROUTER_PUBLIC_KEY": f"{ROUTER.pubkey},{OTHER_ROUTER.pubkey}",
        "NODE_RUNNER": "mock",
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


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def request_event(to: str, *, signer: Keys = ROUTER, **payload: Any) -> Event:
    fields: dict[str, Any] = {"model": MODEL, "prompt": PROMPT, "max_tokens": 64, "stream": True}
    fields.update(payload)
    return seal(signer, Kind.INFER_REQUEST, InferenceRequest(**fields), to=to, nonce=True)


def cancel_event(to: str, request_id: str, *, signer: Keys = ROUTER) -> Event:
    return seal(signer, Kind.INFER_CANCEL, InferCancel(request=request_id), to=to, nonce=True)


def expected(request: Event) -> RunnerResult:
    return MockRunner(MODEL, 4096).answer(decode_payload(request.content, InferenceRequest))


@dataclass
class Seen:
    """What a router saw on one stream, with arrival times."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, SSEvent]] = field(default_factory=list)
    body: bytes = b""

    def named(self, name: str) -> list[SSEvent]:
        return [e for _, e in self.events if e.event == name]

    @property
    def chunks(self) -> list[Event]:
        return [decode_event(e.data) for e in self.named("chunk")]


async def events_of(resp: httpx.Response) -> AsyncGenerator[tuple[float, SSEvent], None]:
    decoder = SSEDecoder()
    async for raw in resp.aiter_raw():
        now = time.perf_counter()
        for event in decoder.feed(raw):
            yield now, event


async def stream(http: httpx.AsyncClient, node: Node, request: Event | bytes) -> Seen:
    """POST to /infer/stream and read every event to the end."""
    body = request.to_json() if isinstance(request, Event) else request
    seen = Seen()
    async with http.stream("POST", f"{node.url}/infer/stream", content=body) as resp:
        seen.status, seen.headers = resp.status_code, dict(resp.headers)
        if resp.status_code != 200:
            seen.body = await resp.aread()
            return seen
        async for item in events_of(resp):
            seen.events.append(item)
    return seen


def check_chunks(seen: Seen, node: Node, request: Event) -> str:
    """Every chunk is node-signed, addressed, bound and in order; returns the concatenated deltas."""
    deltas = []
    for seq, chunk in enumerate(seen.chunks):
        opened = open_event(
            chunk,
            StreamChunk,
            kinds={Kind.STREAM_CHUNK},
            recipient=request.pubkey,
            signers={node.keys.pubkey},
            reply_to=request.id,
        )
        assert opened.payload.seq == seq
        deltas.append(opened.payload.delta)
    return "".join(deltas)


def check_done(seen: Seen, node: Node, request: Event) -> tuple[InferenceResponse, MeteringRecord]:
    [done] = seen.named("done")
    assert seen.events[-1][1].event == "done"
    reply = msgspec.json.decode(done.data, type=NodeReply)
    checks: dict[str, Any] = {"recipient": request.pubkey, "signers": {node.keys.pubkey}, "reply_to": request.id}
    answer = open_event(reply.response, InferenceResponse, kinds={Kind.INFER_RESPONSE}, **checks).payload
    record = open_event(reply.metering, MeteringRecord, kinds={Kind.METERING_RECORD}, **checks).payload
    assert record.request == request.id
    assert record.response == reply.response.id
    assert record.output_sha256 == hashlib.sha256(answer.output.encode()).hexdigest()
    assert record.prompt_sha256 == prompt_sha256(decode_payload(request.content, InferenceRequest))
    assert (record.input_tokens, record.output_tokens) == (answer.usage.input_tokens, answer.usage.output_tokens)
    return answer, record


async def metric(http: httpx.AsyncClient, node: Node, name: str, **labels: str) -> float:
    text = (await http.get(f"{node.url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def health(http: httpx.AsyncClient, node: Node) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(f"{node.url}/health")).json()
    return body


# ---- the happy path ----------------------------------------------------------------------------------


async def test_chunks_arrive_while_generating_and_done_carries_the_verified_chain(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_node(NODE_MOCK_TOKEN_MS="40") as node:
        request = request_event(node.keys.pubkey)
        sent = time.perf_counter()
        seen = await stream(http, node, request)
        assert seen.status == 200
        assert seen.headers["content-type"].startswith("text/event-stream")
        assert seen.headers["x-accel-buffering"] == "no"
        assert seen.headers["cache-control"] == "no-cache"

        want = expected(request)
        words = len(want.output.split())
        assert words >= 8
        first_at = seen.events[0][0] - sent
        end_at = seen.events[-1][0] - sent
        # one word every 40 ms: the first chunk comes after ~1 word, the end after all of them
        assert first_at < end_at / 3, (first_at, end_at)
        assert end_at - first_at >= 0.04 * (words - 2)

        output = check_chunks(seen, node, request)
        assert len(seen.chunks) == words
        assert nostr_sdk.Event.from_json(seen.chunks[0].to_json().decode()).verify()
        answer, record = check_done(seen, node, request)
        assert answer.output == output == want.output
        assert answer.finish_reason == want.finish_reason
        assert (record.input_tokens, record.output_tokens) == (want.input_tokens, want.output_tokens)
        assert PROMPT not in output

        assert await metric(http, node, "fedai_node_stream_chunks_total") == words
        assert await metric(http, node, "fedai_node_ttft_seconds_count") == 1
        assert await metric(http, node, "fedai_node_ttft_seconds_sum") < end_at / 3
        assert await metric(http, node, "fedai_node_streams_total", code="ok") == 1
        assert await metric(http, node, "fedai_node_tokens_total", direction="out") == want.output_tokens
        assert (await health(http, node))["in_flight"] == 0

    lines = [r for r in caplog.records if r.getMessage() == "infer_stream"]
    assert any(getattr(r, "chunks", None) == words and getattr(r, "code", None) == "ok" for r in lines)
    logged = " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (PROMPT, output, node.keys.secret_hex):
        assert secret not in logged


async def test_chat_and_non_streaming_infer_share_the_runner(http: httpx.AsyncClient) -> None:
    async with running_node() as node:
        chat = request_event(node.keys.pubkey, prompt=None, messages=[{"role": "user", "content": PROMPT}])
        seen = await stream(http, node, chat)
        answer, _ = check_done(seen, node, chat)
        assert check_chunks(seen, node, chat) == answer.output == expected(chat).output
        # the same request unary: /infer refuses stream=true, serves stream=false with the same words
        unary = request_event(node.keys.pubkey, prompt=None, messages=[{"role": "user", "content": PROMPT}])
        refused = await http.post(f"{node.url}/infer", content=unary.to_json())
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_request")
        plain = request_event(
            node.keys.pubkey, prompt=None, messages=[{"role": "user", "content": PROMPT}], stream=False
        )
        resp = await http.post(f"{node.url}/infer", content=plain.to_json())
        reply = msgspec.json.decode(resp.content, type=NodeReply)
        assert decode_payload(reply.response.content, InferenceResponse).output == answer.output


# ---- refusals happen before the stream starts ----------------------------------------------------------


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("untrusted signer", {"signer": Keys.generate()}, 403, "forbidden"),
    ("unknown model", {"model": "no-such-model"}, 404, "unknown_model"),
    ("max_tokens over limit", {"max_tokens": 257}, 400, "invalid_request"),
]


@pytest.mark.parametrize(("case", "change", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusals_are_plain_http_errors(
    http: httpx.AsyncClient, case: str, change: dict[str, Any], status: int, code: str
) -> None:
    async with running_node() as node:
        seen = await stream(http, node, request_event(node.keys.pubkey, **change))
        assert seen.status == status
        assert seen.headers["content-type"].startswith("application/json")
        assert msgspec.json.decode(seen.body)["error"]["code"] == code
        assert await metric(http, node, "fedai_node_streams_total", code=code) == 1


async def test_wrong_recipient_replay_and_capacity(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_CAPACITY_MAX="1", NODE_MOCK_TOKEN_MS="30") as node:
        elsewhere = await stream(http, node, request_event(Keys.generate().pubkey))
        assert elsewhere.status == 403
        request = request_event(node.keys.pubkey)
        first = asyncio.create_task(stream(http, node, request))
        await _wait_streams(http, node, 1)
        busy = await stream(http, node, request_event(node.keys.pubkey))
        assert busy.status == 429
        assert busy.headers["retry-after"] == "1"
        assert (await first).status == 200
        again = await stream(http, node, request)
        assert (again.status, msgspec.json.decode(again.body)["error"]["code"]) == (409, "replay")


async def _wait_streams(http: httpx.AsyncClient, node: Node, count: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (await health(http, node))["streams"] != count:
        assert time.monotonic() < deadline, f"never {count} streams in progress"
        await asyncio.sleep(0.01)


# ---- cancel ---------------------------------------------------------------------------------------------


class Watched(MockRunner):
    """The mock runner, recording how many words it produced and whether its stream was closed early."""

    def __init__(self, **options: Any) -> None:
        super().__init__(MODEL, 4096, **options)
        self.produced = 0
        self.closed_early = False

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        finished = False
        try:
            async for item in super().stream(req):
                if isinstance(item, str):
                    self.produced += 1
                yield item
            finished = True
        finally:
            self.closed_early = not finished


async def test_cancel_mid_stream_ends_with_cancelled_and_partial_metering(http: httpx.AsyncClient) -> None:
    runner = Watched(token_ms=60)
    async with running_node(runner) as node:
        request = request_event(node.keys.pubkey)
        seen = Seen()
        async with http.stream("POST", f"{node.url}/infer/stream", content=request.to_json()) as resp:
            seen.status = resp.status_code
            async for item in events_of(resp):
                seen.events.append(item)
                if len(seen.events) == 2:
                    cancel = cancel_event(node.keys.pubkey, request.id)
                    acked = await http.post(f"{node.url}/infer/cancel", content=cancel.to_json())
                    assert acked.status_code == 200, acked.text
                    ack = open_event(
                        decode_event(acked.content),
                        Ack,
                        kinds={Kind.ACK},
                        recipient=ROUTER.pubkey,
                        signers={node.keys.pubkey},
                        reply_to=cancel.id,
                    )
                    assert ack.payload.status == "ok"
        assert seen.status == 200
        answer, record = check_done(seen, node, request)
        full = expected(request)
        chunks = len(seen.chunks)
        assert 2 <= chunks < len(full.output.split())
        assert answer.finish_reason == "cancelled"
        assert answer.output == check_chunks(seen, node, request)
        assert full.output.startswith(answer.output)
        assert record.output_tokens == chunks < full.output_tokens
        assert runner.closed_early
        assert runner.produced <= chunks + 1  # generation stopped (at most the word in flight)
        assert await metric(http, node, "fedai_node_cancelled_total", reason="cancelled") == 1
        assert await metric(http, node, "fedai_node_streams_total", code="cancelled") == 1

        # the stream is over: the same request id is no longer cancellable
        late = await http.post(f"{node.url}/infer/cancel", content=cancel_event(node.keys.pubkey, request.id).to_json())
        assert (late.status_code, late.json()["error"]["code"]) == (400, "invalid_request")
        assert "no such request in progress" in late.json()["error"]["message"]


async def test_cancel_before_the_first_token(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_MOCK_DELAY_MS="3000") as node:
        request = request_event(node.keys.pubkey)
        started = time.monotonic()
        pending = asyncio.create_task(stream(http, node, request))
        await _wait_streams(http, node, 1)
        acked = await http.post(
            f"{node.url}/infer/cancel", content=cancel_event(node.keys.pubkey, request.id).to_json()
        )
        assert acked.status_code == 200
        seen = await pending
        assert time.monotonic() - started < 2.0
        assert seen.status == 200 and seen.chunks == []
        answer, record = check_done(seen, node, request)
        assert (answer.output, answer.finish_reason, record.output_tokens) == ("", "cancelled", 0)


async def test_cancel_refusals(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_MOCK_TOKEN_MS="100") as node:
        request = request_event(node.keys.pubkey)
        pending = asyncio.create_task(stream(http, node, request))
        await _wait_streams(http, node, 1)

        async def cancel(event: Event) -> tuple[int, str]:
            resp = await http.post(f"{node.url}/infer/cancel", content=event.to_json())
            return resp.status_code, resp.json()["error"]["code"]

        assert await cancel(cancel_event(node.keys.pubkey, "ab" * 32)) == (400, "invalid_request")
        assert await cancel(cancel_event(node.keys.pubkey, request.id, signer=Keys.generate())) == (403, "forbidden")
        assert await cancel(cancel_event(Keys.generate().pubkey, request.id)) == (403, "wrong_recipient")
        # a trusted router may not stop another router's stream
        assert await cancel(cancel_event(node.keys.pubkey, request.id, signer=OTHER_ROUTER)) == (400, "invalid_request")
        wrong_kind = seal(ROUTER, Kind.INFER_REQUEST, InferCancel(request=request.id), to=node.keys.pubkey, nonce=True)
        assert await cancel(wrong_kind) == (400, "invalid_event")
        good = cancel_event(node.keys.pubkey, request.id)
        assert (await http.post(f"{node.url}/infer/cancel", content=good.to_json())).status_code == 200
        assert (await http.post(f"{node.url}/infer/cancel", content=good.to_json())).status_code in (400, 409)
        seen = await pending
        answer, _ = check_done(seen, node, request)
        assert answer.finish_reason == "cancelled"


# ---- the router's connection drops ------------------------------------------------------------------------


async def test_dropped_connection_stops_generation_and_frees_the_slot(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runner = Watched(token_ms=100)
    async with running_node(runner, NODE_CAPACITY_MAX="1") as node:
        request = request_event(node.keys.pubkey)
        words = len(expected(request).output.split())
        async with (
            httpx.AsyncClient(timeout=10) as doomed,
            doomed.stream("POST", f"{node.url}/infer/stream", content=request.to_json()) as resp,
        ):
            assert resp.status_code == 200
            async for _ in events_of(resp):
                break  # one chunk, then hang up
        dropped = time.monotonic()
        await eventually(lambda: runner.closed_early, within=2.0, what="the runner's stream closed")
        health_now = await health(http, node)
        assert (health_now["in_flight"], health_now["streams"]) == (0, 0)
        assert time.monotonic() - dropped < 0.1 * (words - 2)  # well before generation would have ended
        assert runner.produced < words

        follow = await http.post(f"{node.url}/infer", content=request_event(node.keys.pubkey, stream=False).to_json())
        assert follow.status_code == 200, follow.text
        assert await metric(http, node, "fedai_node_cancelled_total", reason="disconnected") == 1
        assert await metric(http, node, "fedai_node_streams_total", code="disconnected") == 1
    [line] = [r for r in caplog.records if r.getMessage() == "infer_stream"]
    assert getattr(line, "code", None) == "disconnected"
    assert 1 <= getattr(line, "output_tokens", 0) < words


# ---- failures after the stream started --------------------------------------------------------------------


class Dying(MockRunner):
    """Streams `before` words, then fails with `error`."""

    def __init__(self, before: int, error: Exception) -> None:
        super().__init__(MODEL, 4096)
        self.before = before
        self.error = error

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        sent = 0
        async for item in super().stream(req):
            if sent == self.before:
                raise self.error
            sent += 1
            yield item


async def test_runner_dying_mid_stream_is_an_error_event(http: httpx.AsyncClient) -> None:
    async with running_node(Dying(2, RunnerError("the runner closed the connection mid-answer"))) as node:
        request = request_event(node.keys.pubkey)
        seen = await stream(http, node, request)
        assert seen.status == 200
        assert [e.event for _, e in seen.events] == ["chunk", "chunk", "error"]
        error = msgspec.json.decode(seen.named("error")[0].data)["error"]
        assert error["code"] == "upstream_error"
        assert "mid-answer" in error["message"]
        assert seen.named("done") == []
        assert await metric(http, node, "fedai_node_streams_total", code="upstream_error") == 1
        assert (await health(http, node))["in_flight"] == 0


async def test_runner_failing_before_any_output_is_an_http_error(http: httpx.AsyncClient) -> None:
    failure = RunnerError("the prompt plus max_tokens exceed the runner's context window", ErrorCode.INVALID_REQUEST)
    async with running_node(Dying(0, failure)) as node:
        seen = await stream(http, node, request_event(node.keys.pubkey))
        assert seen.status == 400
        assert msgspec.json.decode(seen.body)["error"]["code"] == "invalid_request"


async def test_unexpected_failure_mid_stream_is_internal_and_not_leaked(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_node(Dying(1, KeyError("saffron quokka"))) as node:
        seen = await stream(http, node, request_event(node.keys.pubkey))
        assert [e.event for _, e in seen.events] == ["chunk", "error"]
        error = msgspec.json.decode(seen.named("error")[0].data)["error"]
        assert error["code"] == "internal"
        assert "quokka" not in str(error)
    assert any(getattr(r, "error_type", None) == "KeyError" for r in caplog.records)
    assert "quokka" not in " ".join(str(r.__dict__) for r in caplog.records)


async def test_timeout_mid_stream_is_an_error_event(http: httpx.AsyncClient) -> None:
    async with running_node(NODE_MOCK_TOKEN_MS="100", NODE_RUNNER_TIMEOUT_MS="350") as node:
        seen = await stream(http, node, request_event(node.keys.pubkey))
        names = [e.event for _, e in seen.events]
        assert names[-1] == "error" and 2 <= names.count("chunk") <= 4
        assert msgspec.json.decode(seen.named("error")[0].data)["error"]["code"] == "upstream_timeout"
        assert (await health(http, node))["in_flight"] == 0
