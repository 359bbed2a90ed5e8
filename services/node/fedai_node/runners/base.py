"""The runner interface: what the node needs from a model backend (llama.cpp, vLLM, the mock, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from fedai.protocol.messages import InferenceRequest


@dataclass(frozen=True, slots=True)
class RunnerModel:
    """A model the runner serves: its id and its own limits (the node may cap them further)."""

    id: str
    context_window: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class RunnerResult:
    output: str
    finish_reason: str  # "stop" or "length"
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Estimate:
    input_tokens: int
    max_output_tokens: int
    latency_ms: float


class RunnerError(Exception):
    """The runner failed (bad answer, connection refused, ...). The node answers `upstream_error` 502.

    The message must never contain prompt or output text: it may be logged.
    """


class Runner(ABC):
    """A model backend. Timeouts are enforced by the node (`NODE_RUNNER_TIMEOUT_MS`), not by the runner."""

    name: str

    @abstractmethod
    async def list_models(self) -> list[RunnerModel]: ...

    @abstractmethod
    async def infer(self, req: InferenceRequest) -> RunnerResult:
        """Run one request to completion. Raises `RunnerError` on failure."""

    @abstractmethod
    async def estimate(self, req: InferenceRequest) -> Estimate: ...

    @abstractmethod
    async def health(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 - optional hook, most runners hold nothing
        """Release connections or processes the runner holds."""
