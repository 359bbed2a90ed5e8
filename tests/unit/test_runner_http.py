"""The generic `http` runner against fake servers speaking the contract of docs/runners.md: with and without
`/infer/stream`, usage given or counted locally, `/estimate` optional, and typed errors."""

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
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import ChatMessage, InferenceRequest, estimate_tokens
from fedai_node.runners import RunnerError, RunnerResult
from fedai_node.runners.http import HttpRunner
from tests.support.servers import serve_app

SECRET = "cerulean wombat"
PIECES = ["one", " two", " three"]


def sse(obj: Any) -> bytes:
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


@dataclass
class FakeBackend:
    """A backend implementing the http contract; `streams=False` leaves out /infer/stream."""

    streams: bool = True
    mode: str = "ok"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def app(self) -> Starlette:
        routes = [
            Route("/models", self.models),
            Route("/health", self.health),
            Route("/infer", self.infer, methods=["POST"]),
            Route("/estimate", self.estimate, methods=["POST"]),
            Route("/infer/stream", self.stream, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"models": [{"id": "backend-7b", "context_window": 8192, "max_tokens": 512}]})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": self.mode != "unhealthy"}, 200 if self.mode != "unhealthy" else 503)

    async def _checked(self, request: Request, path: str) -> dict[str, Any] | Response:
        body: dict[str, Any] = await request.json()
        self.calls.append((path, body))
        if body["model"] != "backend-7b":
            return JSONResponse({"error": {"code": "unknown_model", "message": f"no {body['model']}"}}, 404)
        if self.mode == "context":
            error = {"code": "context_length_exceeded", "message": f"too long: {SECRET}"}
            return JSONResponse({"error": error}, 400)
        return body

    async def infer(self, request: Request) -> Response:
        body = await self._checked(request, "/infer")
        if isinstance(body, Response):
            return body
        if self.mode == "malformed":
            return Response(b'{"output": "one tw', media_type="application/json")
        reply: dict[str, Any] = {"output": "".join(PIECES), "finish_reason": "stop"}
        if self.mode != "no_usage":
            reply["usage"] = {"input_tokens": 9, "output_tokens": 3}
        return JSONResponse(reply)

    async def stream(self, request: Request) -> Response:
        if not self.streams:  # what a backend without the route answers
            self.calls.append(("/infer/stream", {}))
            return PlainTextResponse("Not Found", 404)
        body = await self._checked(request, "/infer/stream")
        if isinstance(body, Response):
            return body
        return StreamingResponse(self._events(), media_type="text/event-stream")

    async def _events(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(PIECES):
            if self.mode == "die" and i == 1:
                raise ConnectionResetError("backend crashed")
            yield sse({"delta": piece})
            await asyncio.sleep(0)
        final: dict[str, Any] = {"done": True, "finish_reason": "length"}
        if self.mode != "no_usage":
            final["usage"] = {"input_tokens": 9, "output_tokens": 3}
        yield sse(final)

    async def estimate(self, request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"input_tokens": 9, "max_output_tokens": body["max_tokens"], "latency_ms": 42.5})


@contextlib.asynccontextmanager
async def backend(fake: FakeBackend, **options: Any) -> AsyncIterator[HttpRunner]:
    async with serve_app(fake.app()) as url:
        runner = HttpRunner(url, timeout_s=5.0, **options)
        try:
            await runner.list_models()
            yield runner
        finally:
            await runner.close()


def request(**overrides: Any) -> InferenceRequest:
    fields: dict[str, Any] = {"model": "backend-7b", "prompt": f"count {SECRET}", "max_tokens": 3}
    fields.update(overrides)
    return InferenceRequest(**fields)


async def collect(runner: HttpRunner, req: InferenceRequest) -> tuple[list[str], RunnerResult]:
    deltas: list[str] = []
    async for item in runner.stream(req):
        if isinstance(item, RunnerResult):
            return deltas, item
        deltas.append(item)
    raise AssertionError("no result")


async def test_models_come_from_the_backend() -> None:
    async with backend(FakeBackend()) as runner:
        [model] = await runner.list_models()
        assert (model.id, model.context_window, model.max_tokens) == ("backend-7b", 8192, 512)
        assert await runner.health() is True


async def test_streaming_backend_streams_each_delta() -> None:
    fake = FakeBackend()
    async with backend(fake) as runner:
        deltas, result = await collect(runner, request(temperature=1.0, stop=["four"]))
        assert deltas == PIECES
        assert result == RunnerResult("one two three", "length", 9, 3)
        assert runner.streams is True
        assert fake.calls == [
            (
                "/infer/stream",
                {
                    "model": "backend-7b",
                    "max_tokens": 3,
                    "prompt": f"count {SECRET}",
                    "temperature": 1.0,
                    "stop": ["four"],
                },
            )
        ]


async def test_backend_without_streaming_sends_one_chunk_and_is_not_asked_again() -> None:
    fake = FakeBackend(streams=False)
    async with backend(fake) as runner:
        deltas, result = await collect(runner, request())
        assert deltas == ["one two three"]
        assert result == RunnerResult("one two three", "stop", 9, 3)
        assert runner.streams is False
        await collect(runner, request())
        assert [path for path, _ in fake.calls] == ["/infer/stream", "/infer", "/infer"]


async def test_chat_messages_are_forwarded() -> None:
    fake = FakeBackend()
    async with backend(fake) as runner:
        await runner.infer(request(prompt=None, messages=[ChatMessage(role="user", content="hi")]))
        assert fake.calls[-1][1]["messages"] == [{"role": "user", "content": "hi"}]
        assert "prompt" not in fake.calls[-1][1]


async def test_usage_absent_is_counted_locally() -> None:
    async with backend(FakeBackend(mode="no_usage", streams=False)) as runner:
        result = await runner.infer(request(prompt="x" * 20))
        assert (result.input_tokens, result.output_tokens) == (5, estimate_tokens(len(b"one two three")))
    async with backend(FakeBackend(mode="no_usage")) as runner:
        _, result = await collect(runner, request(prompt="x" * 20))
        assert (result.input_tokens, result.output_tokens) == (5, len(PIECES))


async def test_estimate_is_asked_and_optional() -> None:
    async with backend(FakeBackend()) as runner:
        estimate = await runner.estimate(request(max_tokens=2))
        assert (estimate.input_tokens, estimate.max_output_tokens, estimate.latency_ms) == (9, 2, 42.5)

    class NoEstimate(FakeBackend):
        def app(self) -> Starlette:
            app = super().app()
            app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/estimate"]
            return app

    async with backend(NoEstimate()) as runner:
        estimate = await runner.estimate(request(prompt="x" * 8, max_tokens=2))
        assert (estimate.input_tokens, estimate.max_output_tokens, estimate.latency_ms) == (2, 2, 0.0)


@pytest.mark.parametrize("streams", [True, False])
async def test_errors_are_typed(streams: bool) -> None:
    async with backend(FakeBackend(streams=streams)) as runner:
        with pytest.raises(RunnerError) as info:
            await collect(runner, request(model="other"))
        assert info.value.code is ErrorCode.UNKNOWN_MODEL
    async with backend(FakeBackend(mode="context", streams=streams)) as runner:
        with pytest.raises(RunnerError) as info:
            await collect(runner, request())
        assert info.value.code is ErrorCode.INVALID_REQUEST
        assert SECRET not in str(info.value)


async def test_malformed_json_and_death_mid_stream() -> None:
    async with backend(FakeBackend(mode="malformed", streams=False)) as runner:
        with pytest.raises(RunnerError, match="malformed JSON") as info:
            await runner.infer(request())
        assert info.value.code is ErrorCode.UPSTREAM_ERROR
    async with backend(FakeBackend(mode="die")) as runner:
        seen: list[str] = []

        async def drain() -> None:
            async for item in runner.stream(request()):
                seen.append(str(item))

        with pytest.raises(RunnerError, match="mid-answer"):
            await drain()
        assert seen == ["one"]


async def test_unhealthy_backend() -> None:
    async with backend(FakeBackend(mode="unhealthy")) as runner:
        assert await runner.health() is False
