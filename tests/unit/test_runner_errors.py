"""How a model server's error answers become typed runner errors (pure), and NODE_MODEL_ID selection."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from fedai.protocol.errors import ErrorCode
from fedai.service.client import ReplyTooLarge
from fedai_node.runners import RunnerError, RunnerModel
from fedai_node.runners.upstream import (
    MissingEndpoint,
    error_from_body,
    select_models,
    stream_error,
    transport_error,
)

ECHO = "the user's secret prompt text"

CASES: list[tuple[str, int, Any, ErrorCode, str]] = [
    (
        "llama.cpp context",
        400,
        {
            "error": {
                "code": 400,
                "type": "exceed_context_size_error",
                "message": ECHO,
                "n_prompt_tokens": 900,
                "n_ctx": 512,
            }
        },
        ErrorCode.INVALID_REQUEST,
        "context window (n_prompt_tokens=900, n_ctx=512)",
    ),
    (
        "vLLM context",
        400,
        {
            "object": "error",
            "type": "BadRequestError",
            "code": 400,
            "message": f"This model's maximum context length is 2048 tokens. {ECHO}",
        },
        ErrorCode.INVALID_REQUEST,
        "context window",
    ),
    (
        "OpenAI context code",
        400,
        {"error": {"code": "context_length_exceeded", "message": ECHO}},
        ErrorCode.INVALID_REQUEST,
        "context window",
    ),
    (
        "other 400",
        400,
        {"error": {"message": ECHO, "type": "invalid_request_error"}},
        ErrorCode.INVALID_REQUEST,
        "refused the request as invalid (HTTP 400, invalid_request_error)",
    ),
    ("422 no body", 422, None, ErrorCode.INVALID_REQUEST, "HTTP 422"),
    (
        "vLLM unknown model",
        404,
        {"object": "error", "type": "NotFoundError", "code": 404, "message": "The model `x` does not exist."},
        ErrorCode.UNKNOWN_MODEL,
        "does not serve this model",
    ),
    ("ours unknown model", 404, {"error": {"code": "unknown_model", "message": "no"}}, ErrorCode.UNKNOWN_MODEL, ""),
    ("401", 401, {"error": "bad key"}, ErrorCode.UPSTREAM_ERROR, "NODE_RUNNER_API_KEY"),
    ("429", 429, None, ErrorCode.CAPACITY_EXCEEDED, "busy"),
    (
        "503 loading",
        503,
        {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
        ErrorCode.NO_CAPACITY,
        "loading",
    ),
    ("504", 504, None, ErrorCode.UPSTREAM_TIMEOUT, "timed out"),
    ("500 html", 500, "<html>oops</html>", ErrorCode.UPSTREAM_ERROR, "HTTP 500"),
    ("type that is not an identifier", 500, {"error": {"type": ECHO}}, ErrorCode.UPSTREAM_ERROR, "(HTTP 500)"),
]


@pytest.mark.parametrize(("case", "status", "body", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_error_bodies(case: str, status: int, body: Any, code: ErrorCode, words: str) -> None:
    err = error_from_body(status, body)
    assert err.code is code
    assert words in str(err)
    assert ECHO not in str(err)


def test_missing_endpoints_and_retry_after() -> None:
    assert isinstance(error_from_body(404, None, path="/infer/stream"), MissingEndpoint)
    assert isinstance(error_from_body(405, {"detail": "Method Not Allowed"}), MissingEndpoint)
    assert error_from_body(503, None, "7").retry_after_ms == 7000
    assert error_from_body(429, None, "soon").retry_after_ms == 1000


def test_errors_inside_streams() -> None:
    assert stream_error({"content": "hi"}, "/completion") is None
    llama = stream_error({"error": {"code": 500, "message": ECHO, "type": "server_error"}}, "/completion")
    assert llama is not None and llama.code is ErrorCode.UPSTREAM_ERROR and ECHO not in str(llama)
    vllm = stream_error({"object": "error", "message": "maximum context length", "code": 400}, "/v1/completions")
    assert vllm is not None and vllm.code is ErrorCode.INVALID_REQUEST


def test_transport_errors() -> None:
    assert transport_error(TimeoutError(), 2.5).code is ErrorCode.UPSTREAM_TIMEOUT
    assert "2.5 s" in str(transport_error(aiohttp.SocketTimeoutError(), 2.5))
    assert "mid-answer" in str(transport_error(aiohttp.ClientPayloadError("x"), 1))
    assert "mid-answer" in str(transport_error(aiohttp.ServerDisconnectedError(), 1))
    assert "exceeds" in str(transport_error(ReplyTooLarge("big"), 1))
    assert transport_error(aiohttp.ClientOSError(), 1).code is ErrorCode.UPSTREAM_ERROR


def test_select_models() -> None:
    a, b = RunnerModel("a", 100, 100), RunnerModel("b", 200, 50)
    assert select_models(None, [a, b]) == ([a, b], {"a": "a", "b": "b"})
    assert select_models("b", [a, b]) == ([RunnerModel("b", 200, 50)], {"b": "b"})
    assert select_models("mine", [a]) == ([RunnerModel("mine", 100, 100)], {"mine": "a"})
    with pytest.raises(RunnerError, match="NODE_MODEL_ID='c' is not served"):
        select_models("c", [a, b])
    with pytest.raises(RunnerError, match="lists no models"):
        select_models(None, [])
