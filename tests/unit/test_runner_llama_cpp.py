"""The llama.cpp runner against a fake llama-server (native API) on loopback: request building, SSE parsing,
usage, chat through /apply-template, loading, and every failure mapped to its typed error."""

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
from fedai.protocol.messages import ChatMessage, InferenceRequest
from fedai_node.runners import RunnerError, RunnerResult
from fedai_node.runners.llama_cpp import LlamaCppRunner
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually

SECRET = "ultramarine axolotl"  # in prompts; must never appear in an error message
TOKENS = ["Hello", ",", " world", "!"]


def sse(obj: Any) -> bytes:
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


@dataclass
class FakeLlama:
    """llama-server's native API, scripted per test with `mode`."""

    mode: str = "ok"
    loading: bool = False
    bodies: list[dict[str, Any]] = field(default_factory=list)
    templated: list[Any] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    finished: bool | None = None  # did the last stream run to its end (False: the client went away)
    open_streams: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health),
                Route("/props", self.props),
                Route("/apply-template", self.apply_template, methods=["POST"]),
                Route("/completion", self.completion, methods=["POST"]),
            ]
        )

    def _loading(self) -> Response:
        return JSONResponse({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, 503)

    async def health(self, request: Request) -> Response:
        self.authorization.append(request.headers.get("authorization"))
        return self._loading() if self.loading else JSONResponse({"status": "ok"})

    async def props(self, request: Request) -> Response:
        if self.loading:
            return self._loading()
        return JSONResponse(
            {
                "model_alias": "tiny-llama.gguf",
                "model_path": "/models/tiny-llama.gguf",
                "total_slots": 4,
                "default_generation_settings": {"n_ctx": 1024, "params": {}},
            }
        )

    async def apply_template(self, request: Request) -> Response:
        body = await request.json()
        self.templated.append(body["messages"])
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in body["messages"])
        return JSONResponse({"prompt": text + "<|assistant|>"})

    async def completion(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        self.authorization.append(request.headers.get("authorization"))
        if self.mode == "context":
            error = {
                "code": 400,
                "message": f"the request exceeds the available context size: {SECRET}",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 1500,
                "n_ctx": 1024,
            }
            return JSONResponse({"error": error}, 400)
        if self.mode == "server_error":
            return JSONResponse({"error": {"code": 500, "message": SECRET, "type": "server_error"}}, 500)
        return StreamingResponse(self._events(body), media_type="text/event-stream")

    async def _events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.finished = False
        self.open_streams += 1
        try:
            if self.mode == "slow":
                await asyncio.sleep(5)
            for i, token in enumerate(TOKENS):
                if self.mode == "malformed" and i == 2:
                    yield b"data: {not json\n\n"
                if self.mode == "die" and i == 2:
                    raise ConnectionResetError("llama-server crashed")
                if self.mode == "error_event" and i == 2:
                    yield sse({"error": {"code": 500, "message": SECRET, "type": "server_error"}})
                    return
                if self.mode == "endless" and i == 1:
                    await asyncio.sleep(30)
                yield sse({"content": token, "stop": False, "tokens_predicted": i + 1, "tokens_evaluated": 7})
            if self.mode == "truncated":
                return
            final = {
                "content": "",
                "stop": True,
                "stop_type": "limit" if self.mode == "limit" else "eos",
                "tokens_predicted": len(TOKENS),
                "tokens_evaluated": 7,
                "timings": {"predicted_n": 4},
            }
            if self.mode == "no_usage":
                del final["tokens_predicted"], final["tokens_evaluated"]
            yield sse(final)
            self.finished = True
        finally:
            self.open_streams -= 1


@contextlib.asynccontextmanager
async def llama(fake: FakeLlama | None = None, **options: Any) -> AsyncIterator[tuple[FakeLlama, LlamaCppRunner]]:
    fake = fake or FakeLlama()
    async with serve_app(fake.app()) as url:
        runner = LlamaCppRunner(url, timeout_s=options.pop("timeout_s", 5.0), **options)
        try:
            yield fake, runner
        finally:
            await runner.close()


def request(**overrides: Any) -> InferenceRequest:
    fields: dict[str, Any] = {"model": "tiny-llama.gguf", "prompt": f"Say hi to {SECRET}", "max_tokens": 16}
    fields.update(overrides)
    return InferenceRequest(**fields)


async def collect(runner: LlamaCppRunner, req: InferenceRequest) -> tuple[list[str], RunnerResult]:
    deltas: list[str] = []
    async for item in runner.stream(req):
        if isinstance(item, RunnerResult):
            return deltas, item
        deltas.append(item)
    raise AssertionError("no result")


async def failure(runner: LlamaCppRunner, req: InferenceRequest | None = None) -> RunnerError:
    with pytest.raises(RunnerError) as info:
        await collect(runner, req or request())
    assert SECRET not in str(info.value)
    return info.value


# ---- discovery ------------------------------------------------------------------------------------------


async def test_model_and_per_slot_context_come_from_props() -> None:
    async with llama() as (_, runner):
        [model] = await runner.list_models()
        assert (model.id, model.context_window, model.max_tokens) == ("tiny-llama.gguf", 1024, 1024)


async def test_node_model_id_renames_the_single_model() -> None:
    async with llama(model_id="tiny") as (_, runner):
        [model] = await runner.list_models()
        assert (model.id, model.context_window) == ("tiny", 1024)


async def test_loading_server_is_not_ready_then_ready() -> None:
    async with llama(FakeLlama(loading=True)) as (fake, runner):
        assert await runner.health() is False
        with pytest.raises(RunnerError) as info:
            await runner.list_models()
        assert info.value.code is ErrorCode.NO_CAPACITY
        assert info.value.retry_after_ms == 1000
        fake.loading = False
        assert await runner.health() is True
        assert [m.id for m in await runner.list_models()] == ["tiny-llama.gguf"]


async def test_unreachable_server() -> None:
    runner = LlamaCppRunner(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    try:
        assert await runner.health() is False
        with pytest.raises(RunnerError) as info:
            await runner.list_models()
        assert info.value.code is ErrorCode.UPSTREAM_ERROR
        assert "unreachable" in str(info.value)
    finally:
        await runner.close()


# ---- generation -------------------------------------------------------------------------------------------


async def test_prompt_streams_deltas_then_usage_from_the_final_event() -> None:
    async with llama(api_key="sk-local") as (fake, runner):
        deltas, result = await collect(runner, request(temperature=0.2, top_p=0.9, stop=["\n\n"]))
        assert deltas == TOKENS
        assert result == RunnerResult("Hello, world!", "stop", 7, 4)
        [body] = fake.bodies
        assert body == {
            "prompt": f"Say hi to {SECRET}",
            "n_predict": 16,
            "stream": True,
            "cache_prompt": True,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["\n\n"],
        }
        assert fake.authorization[-1] == "Bearer sk-local"
        assert "sk-local" not in repr(runner.http)


async def test_limit_means_length_and_infer_drains_the_stream() -> None:
    async with llama(FakeLlama(mode="limit")) as (_, runner):
        result = await runner.infer(request())
        assert (result.output, result.finish_reason) == ("Hello, world!", "length")


async def test_chat_applies_the_servers_template() -> None:
    async with llama() as (fake, runner):
        messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=SECRET)]
        _, result = await collect(runner, request(prompt=None, messages=messages))
        assert result.output == "Hello, world!"
        assert fake.templated == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": SECRET}]]
        assert fake.bodies[0]["prompt"] == f"<|system|>Be brief.\n<|user|>{SECRET}\n<|assistant|>"


async def test_missing_usage_is_counted_locally() -> None:
    async with llama(FakeLlama(mode="no_usage")) as (_, runner):
        _, result = await collect(runner, request(prompt="x" * 40))
        assert (result.input_tokens, result.output_tokens) == (10, len(TOKENS))


async def test_closing_the_stream_stops_the_server() -> None:
    async with llama(FakeLlama(mode="endless")) as (fake, runner):
        items = runner.stream(request())
        assert await anext(items) == "Hello"
        await items.aclose()
        await eventually(lambda: fake.open_streams == 0, within=3, what="the server saw the hang-up")
        assert fake.finished is False


# ---- failures ---------------------------------------------------------------------------------------------


async def test_context_too_long_is_invalid_request_with_counts_but_no_text() -> None:
    async with llama(FakeLlama(mode="context")) as (_, runner):
        err = await failure(runner)
        assert err.code is ErrorCode.INVALID_REQUEST
        assert "context window" in str(err)
        assert "n_prompt_tokens=1500" in str(err) and "n_ctx=1024" in str(err)


@pytest.mark.parametrize(
    ("mode", "code", "words"),
    [
        ("malformed", ErrorCode.UPSTREAM_ERROR, "malformed JSON"),
        ("die", ErrorCode.UPSTREAM_ERROR, "mid-answer"),
        ("truncated", ErrorCode.UPSTREAM_ERROR, "before its final event"),
        ("error_event", ErrorCode.UPSTREAM_ERROR, "HTTP 500"),
        ("server_error", ErrorCode.UPSTREAM_ERROR, "HTTP 500, server_error"),
    ],
)
async def test_broken_answers_are_typed_errors(mode: str, code: ErrorCode, words: str) -> None:
    async with llama(FakeLlama(mode=mode)) as (_, runner):
        err = await failure(runner)
        assert err.code is code
        assert words in str(err)


async def test_slow_server_times_out() -> None:
    async with llama(FakeLlama(mode="slow"), timeout_s=0.3) as (_, runner):
        err = await failure(runner)
        assert err.code is ErrorCode.UPSTREAM_TIMEOUT
