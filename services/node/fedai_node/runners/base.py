"""The runner interface: what the node needs from a model backend (llama.cpp, vLLM, the mock, ...)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import InferenceRequest, estimate_tokens, prompt_material


@dataclass(frozen=True, slots=True)
class RunnerModel:
    """A model the runner serves: its id and its own limits (the node may cap them further)."""

    id: str
    context_window: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class RunnerResult:
    output: str
    finish_reason: str  # "stop", "length", or what the server said; the node adds "cancelled"
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Estimate:
    input_tokens: int
    max_output_tokens: int
    latency_ms: float


class RunnerError(Exception):
    """The runner failed. `code` is the protocol error the node answers with: `upstream_error` 502 by default,
    `upstream_timeout` 504, `invalid_request` 400 (e.g. the server says the context is too long),
    `unknown_model` 404, `no_capacity` 503 (loading), `capacity_exceeded` 429.

    The message must never contain prompt or output text: it is logged and sent to the router.
    """

    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.UPSTREAM_ERROR, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms


StreamItem = str | RunnerResult


def estimated_input_tokens(req: InferenceRequest) -> int:
    """The request's input tokens when the server does not count them: 4 bytes a token of the prompt material."""
    return estimate_tokens(len(prompt_material(req)))


class Runner(ABC):
    """A model backend. The node enforces `NODE_RUNNER_TIMEOUT_MS` around every call; runners only bound
    their own reads (a stalled socket) and map the server's errors to `RunnerError`."""

    name: str

    @abstractmethod
    async def list_models(self) -> list[RunnerModel]:
        """The models the server serves now. Raises `RunnerError` while it is down or loading."""

    @abstractmethod
    def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        """Yield text deltas as the server generates them, then exactly one `RunnerResult` whose `output` is
        their concatenation. Closing the iterator (or cancelling the task) stops generation upstream: the
        HTTP response to the server is closed. Raises `RunnerError`."""

    async def infer(self, req: InferenceRequest) -> RunnerResult:
        """Run one request to completion (by default: drain `stream`). Raises `RunnerError`."""
        async with contextlib.aclosing(self.stream(req)) as items:
            async for item in items:
                if isinstance(item, RunnerResult):
                    return item
        raise RunnerError(f"runner {self.name!r} ended its stream without a result")

    async def estimate(self, req: InferenceRequest) -> Estimate:
        """A local estimate (4 bytes a token); runners with a cheaper exact answer override it."""
        return Estimate(input_tokens=estimated_input_tokens(req), max_output_tokens=req.max_tokens, latency_ms=0.0)

    def partial_usage(self, req: InferenceRequest, output: str, chunks: int) -> tuple[int, int]:
        """(input, output) tokens of a generation stopped early, when the server never sent its usage.

        Input: 4 bytes a token of the prompt material. Output: one token per streamed delta (llama-server and
        vLLM send one token per event; the mock one word).
        """
        return estimated_input_tokens(req), chunks

    @abstractmethod
    async def health(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 - optional hook, most runners hold nothing
        """Release connections or processes the runner holds."""
