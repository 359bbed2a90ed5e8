"""The OpenAI-compatible runner against a fake vLLM-style server on loopback: base URL rules, model discovery
and renaming, completions and chat streaming, usage read or counted locally, and typed errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import ChatMessage, InferenceRequest, estimate_tokens, prompt_material
from fedai_node.runners import RunnerError, RunnerResult
from fedai_node.runners.openai import OpenAIRunner, api_base
from tests.support.servers import serve_app
from tests.support.wait import eventually

SECRET = "vermilion pangolin"
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
TOKENS = ["The", " answer", " is", " 4", "."]


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else msgspec.json.encode(obj)) + b"\n\n"


@dataclass
class FakeOpenAI:
    """vLLM's OpenAI server, scripted per test with `mode`; `models` is what /v1/models lists."""

    mode: str = "ok"
    models: list[dict[str, Any]] = field(default_factory=lambda: [{"id": MODEL, "max_model_len": 2048}])
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    open_streams: int = 0
    finished: bool | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self.list_models),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
            ]
        )

    async def list_models(self, request: Request) -> Response:
        self.authorization.append(request.headers.get("authorization"))
        if self.mode == "unauthorized":
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        return JSONResponse({"object": "list", "data": self.models})

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        chat = request.url.path.endswith("/chat/completions")
        self.calls.append((request.url.path, body))
        self.authorization.append(request.headers.get("authorization"))
        if body["model"] not in {m["id"] for m in self.models}:
            message = f"The model `{body['model']}` does not exist."
            return JSONResponse({"object": "error", "message": message, "type": "NotFoundError", "code": 404}, 404)
        if self.mode == "context":
            message = (
                "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens "
                f"(3900 in the messages, 100 in the completion). {SECRET}"
            )
            return JSONResponse({"object": "error", "message": message, "type": "BadRequestError", "code": 400}, 400)
        if self.mode == "busy":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429, {"Retry-After": "3"})
        return StreamingResponse(self._events(chat), media_type="text/event-stream")

    def _chunk(self, chat: bool, text: str | None, finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        return {"id": "cmpl-1", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}

    async def _events(self, chat: bool) -> AsyncIterator[bytes]:
        self.open_streams += 1
        self.finished = False
        try:
            if self.mode == "slow":
                await asyncio.sleep(5)
            if chat:
                yield sse({**self._chunk(chat, None), "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for i, token in enumerate(TOKENS):
                if self.mode == "malformed" and i == 1:
                    yield b'data: {"choices": [\n\n'
                if self.mode == "die" and i == 2:
                    raise ConnectionResetError("vLLM crashed")
                if self.mode == "error_event" and i == 2:
                    yield sse({"object": "error", "message": SECRET, "type": "InternalServerError", "code": 500})
                    return
                if self.mode == "endless" and i == 1:
                    await asyncio.sleep(30)
                last = i == len(TOKENS) - 1 and self.mode != "no_finish"
                yield sse(self._chunk(chat, token, ("length" if self.mode == "length" else "stop") if last else None))
            if self.mode == "no_finish":
                return
            if self.mode != "no_usage":
                usage = {"prompt_tokens": 11, "completion_tokens": len(TOKENS), "total_tokens": 11 + len(TOKENS)}
                yield sse({"id": "cmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield sse(b"[DONE]")
            self.finished = True
        finally:
            self.open_streams -= 1


@contextlib.asynccontextmanager
async def openai(
    fake: FakeOpenAI | None = None, *, path: str = "", **options: Any
) -> AsyncIterator[tuple[FakeOpenAI, OpenAIRunner]]:
    fake = fake or FakeOpenAI()
    async with serve_app(fake.app()) as url:
        runner = OpenAIRunner(url + path, timeout_s=options.pop("timeout_s", 5.0), **options)
        try:
            await runner.list_models()
            yield fake, runner
        finally:
            await runner.close()


def request(**overrides: Any) -> InferenceRequest:
    fields: dict[str, Any] = {"model": MODEL, "prompt": f"2+2? {SECRET}", "max_tokens": 8}
    fields.update(overrides)
    return InferenceRequest(**fields)


def chat(**overrides: Any) -> InferenceRequest:
    return request(prompt=None, messages=[ChatMessage(role="user", content=f"2+2? {SECRET}")], **overrides)


async def collect(runner: OpenAIRunner, req: InferenceRequest) -> tuple[list[str], RunnerResult]:
    deltas: list[str] = []
    async for item in runner.stream(req):
        if isinstance(item, RunnerResult):
            return deltas, item
        deltas.append(item)
    raise AssertionError("no result")


async def failure(runner: OpenAIRunner, req: InferenceRequest | None = None) -> RunnerError:
    with pytest.raises(RunnerError) as info:
        await collect(runner, req or request())
    assert SECRET not in str(info.value)
    return info.value


def test_api_base() -> None:
    assert api_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert api_base("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert api_base("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert api_base("https://example.org/api/openai/v1") == "https://example.org/api/openai/v1"


# ---- discovery ------------------------------------------------------------------------------------------


async def test_models_and_context_windows_are_discovered() -> None:
    fake = FakeOpenAI(
        models=[{"id": MODEL, "max_model_len": 2048}, {"id": "tiny", "meta": {"n_ctx": 512}}, {"id": "plain"}]
    )
    async with openai(fake, context_window=1000) as (_, runner):
        models = await runner.list_models()
        assert [(m.id, m.context_window) for m in models] == [(MODEL, 2048), ("tiny", 512), ("plain", 1000)]


async def test_base_url_with_v1_is_used_as_given() -> None:
    async with openai(path="/v1") as (_, runner):
        assert [m.id for m in await runner.list_models()] == [MODEL]


async def test_override_renames_a_single_model_and_requests_use_the_servers_id() -> None:
    async with openai(model_id="qwen-small") as (fake, runner):
        [model] = await runner.list_models()
        assert (model.id, model.context_window) == ("qwen-small", 2048)
        _, result = await collect(runner, request(model="qwen-small"))
        assert result.output == "The answer is 4."
        assert fake.calls[0][1]["model"] == MODEL


async def test_override_must_be_served_when_the_server_has_several() -> None:
    fake = FakeOpenAI(models=[{"id": "a"}, {"id": "b"}])
    async with serve_app(fake.app()) as url:
        runner = OpenAIRunner(url, timeout_s=5, model_id="c")
        with pytest.raises(RunnerError) as info:
            await runner.list_models()
        assert "NODE_MODEL_ID='c'" in str(info.value) and "a, b" in str(info.value)
        runner = OpenAIRunner(url, timeout_s=5, model_id="b")
        assert [m.id for m in await runner.list_models()] == ["b"]
        await runner.close()


async def test_api_key_is_sent_as_bearer_and_refusal_names_the_variable() -> None:
    async with openai(api_key="sk-test-123") as (fake, runner):
        await collect(runner, request())
        assert set(fake.authorization) == {"Bearer sk-test-123"}
        assert await runner.health() is True
        fake.mode = "unauthorized"
        with pytest.raises(RunnerError) as info:
            await runner.list_models()
        assert "NODE_RUNNER_API_KEY" in str(info.value) and "sk-test-123" not in str(info.value)
        assert await runner.health() is False


# ---- generation -------------------------------------------------------------------------------------------


async def test_completion_stream_with_usage() -> None:
    async with openai() as (fake, runner):
        deltas, result = await collect(runner, request(temperature=0.0, top_p=0.5, stop=["\n"]))
        assert deltas == TOKENS
        assert result == RunnerResult("The answer is 4.", "stop", 11, 5)
        path, body = fake.calls[0]
        assert path == "/v1/completions"
        assert body == {
            "model": MODEL,
            "prompt": f"2+2? {SECRET}",
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
            "top_p": 0.5,
            "stop": ["\n"],
        }


async def test_chat_stream_skips_the_role_chunk() -> None:
    async with openai(FakeOpenAI(mode="length")) as (fake, runner):
        deltas, result = await collect(runner, chat())
        assert deltas == TOKENS
        assert (result.output, result.finish_reason, result.output_tokens) == ("The answer is 4.", "length", 5)
        path, body = fake.calls[0]
        assert path == "/v1/chat/completions"
        assert body["messages"] == [{"role": "user", "content": f"2+2? {SECRET}"}]


@pytest.mark.parametrize("build", [request, chat], ids=["completion", "chat"])
async def test_usage_absent_is_counted_locally(build: Any) -> None:
    async with openai(FakeOpenAI(mode="no_usage")) as (_, runner):
        req = build()
        _, result = await collect(runner, req)
        assert result.input_tokens == estimate_tokens(len(prompt_material(req)))
        assert result.output_tokens == len(TOKENS)


async def test_closing_the_stream_stops_the_server() -> None:
    async with openai(FakeOpenAI(mode="endless")) as (fake, runner):
        items = runner.stream(request())
        assert await anext(items) == "The"
        await items.aclose()
        await eventually(lambda: fake.open_streams == 0, within=3, what="the server saw the hang-up")
        assert fake.finished is False


# ---- failures ---------------------------------------------------------------------------------------------


async def test_model_not_served_is_unknown_model() -> None:
    async with openai() as (_, runner):
        err = await failure(runner, request(model="gone"))
        assert err.code is ErrorCode.UNKNOWN_MODEL


async def test_context_too_long_is_invalid_request_without_the_servers_text() -> None:
    async with openai(FakeOpenAI(mode="context")) as (_, runner):
        err = await failure(runner, chat())
        assert err.code is ErrorCode.INVALID_REQUEST
        assert "context window" in str(err)


async def test_busy_server_is_capacity_exceeded_with_retry_after() -> None:
    async with openai(FakeOpenAI(mode="busy")) as (_, runner):
        err = await failure(runner)
        assert (err.code, err.retry_after_ms) == (ErrorCode.CAPACITY_EXCEEDED, 3000)


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("malformed", "malformed JSON"),
        ("die", "mid-answer"),
        ("no_finish", "without a finish_reason"),
        ("error_event", "HTTP 500, InternalServerError"),
    ],
)
async def test_broken_streams_are_upstream_errors(mode: str, words: str) -> None:
    async with openai(FakeOpenAI(mode=mode)) as (_, runner):
        err = await failure(runner)
        assert err.code is ErrorCode.UPSTREAM_ERROR
        assert words in str(err)


async def test_slow_server_times_out() -> None:
    async with openai(FakeOpenAI(mode="slow"), timeout_s=0.3) as (_, runner):
        err = await failure(runner)
        assert err.code is ErrorCode.UPSTREAM_TIMEOUT
