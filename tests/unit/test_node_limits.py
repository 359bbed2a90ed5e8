"""Node request limits and the in-flight limiter: pure checks, each refusal with its protocol code."""

from __future__ import annotations

import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import InferenceRequest
from fedai_node.limits import CAPACITY_RETRY_AFTER_MS, InFlight, Limits, check_request
from fedai_node.runners.base import RunnerModel

MODELS = {"m": RunnerModel("m", context_window=1000, max_tokens=500)}
LIMITS = Limits(max_prompt_bytes=2000, max_tokens=300, job_types={"text-generation"})


def req(prompt: str = "hello", max_tokens: int = 10, **extra: object) -> InferenceRequest:
    return InferenceRequest(model=str(extra.pop("model", "m")), prompt=prompt, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]


def code_of(request: InferenceRequest) -> ErrorCode:
    with pytest.raises(FedaiError) as info:
        check_request(request, MODELS, LIMITS)
    return info.value.code


def test_accepts_within_limits() -> None:
    assert check_request(req(), MODELS, LIMITS) is MODELS["m"]
    assert check_request(req(max_tokens=300, job_type="text-generation"), MODELS, LIMITS) is MODELS["m"]


def test_prompt_too_large() -> None:
    assert code_of(req(prompt="x" * 2001)) is ErrorCode.TOO_LARGE
    assert FedaiError(ErrorCode.TOO_LARGE, "").status == 413


def test_unknown_model() -> None:
    assert code_of(req(model="nope")) is ErrorCode.UNKNOWN_MODEL


def test_max_tokens_over_node_cap_and_model_cap() -> None:
    assert code_of(req(max_tokens=301)) is ErrorCode.INVALID_REQUEST
    small_model = {"m": RunnerModel("m", context_window=1000, max_tokens=50)}
    with pytest.raises(FedaiError) as info:
        check_request(req(max_tokens=51), small_model, LIMITS)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_context_window() -> None:
    # 1600 bytes ~ 400 tokens + 300 = 700 fits 1000; 2000 bytes = 500 tokens + 300 = 800 fits; shrink the window
    tight = {"m": RunnerModel("m", context_window=700, max_tokens=500)}
    assert check_request(req(prompt="x" * 1600, max_tokens=300), tight, LIMITS)
    with pytest.raises(FedaiError) as info:
        check_request(req(prompt="x" * 1604, max_tokens=300), tight, LIMITS)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_job_type_and_stream_refused() -> None:
    assert code_of(req(job_type="image-generation")) is ErrorCode.INVALID_REQUEST
    assert code_of(req(stream=True)) is ErrorCode.INVALID_REQUEST


def test_in_flight_limiter() -> None:
    limiter = InFlight(2)
    limiter.acquire()
    with limiter.slot():
        assert limiter.count == 2
        with pytest.raises(FedaiError) as info:
            limiter.acquire()
        assert info.value.code is ErrorCode.CAPACITY_EXCEEDED
        assert info.value.retry_after_ms == CAPACITY_RETRY_AFTER_MS
        assert info.value.status == 429
    assert limiter.count == 1
    limiter.release()
    assert limiter.count == 0
    with pytest.raises(RuntimeError):
        limiter.release()
