"""Model runners, one module each, built by name through `make_runner` from a `RunnerSpec` (plain data; the
node's settings provide one, `NodeSettings.runner_spec`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedai_node.runners.base import Estimate, Runner, RunnerError, RunnerModel, RunnerResult, StreamItem
from fedai_node.runners.http import HttpRunner
from fedai_node.runners.llama_cpp import LlamaCppRunner
from fedai_node.runners.mock import MOCK_MODEL_ID, MockRunner
from fedai_node.runners.openai import OpenAIRunner

_URL_RUNNERS: dict[str, type[LlamaCppRunner | OpenAIRunner | HttpRunner]] = {
    "llama_cpp": LlamaCppRunner,
    "openai": OpenAIRunner,
    "http": HttpRunner,
}
RUNNER_NAMES = (*_URL_RUNNERS, "mock")
URL_RUNNERS = frozenset(_URL_RUNNERS)  # these need NODE_RUNNER_URL


@dataclass(frozen=True, slots=True)
class RunnerSpec:
    """Which runner to build and how to reach its model server."""

    name: str
    url: str | None = None  # required by the URL_RUNNERS
    timeout_s: float = 60.0
    model_id: str | None = None  # None: serve the models the server lists
    context_window: int = 4096  # the mock's window; the others' fallback when the server reports none
    api_key: str | None = field(default=None, repr=False)
    mock_delay_ms: int = 0
    mock_token_ms: int = 0


def make_runner(spec: RunnerSpec) -> Runner:
    """Build the runner `spec.name` names (validated by the node's config already)."""
    name = spec.name
    if name == "mock":
        return MockRunner(spec.model_id or MOCK_MODEL_ID, spec.context_window, spec.mock_delay_ms, spec.mock_token_ms)
    cls = _URL_RUNNERS.get(name)
    if cls is None:
        raise ValueError(f"unknown runner {name!r}; available: {', '.join(RUNNER_NAMES)}")
    if spec.url is None:
        raise ValueError(f"runner {name!r} needs NODE_RUNNER_URL")
    return cls(
        spec.url,
        timeout_s=spec.timeout_s,
        model_id=spec.model_id,
        context_window=spec.context_window,
        api_key=spec.api_key,
    )


__all__ = [
    "RUNNER_NAMES",
    "URL_RUNNERS",
    "Estimate",
    "Runner",
    "RunnerError",
    "RunnerModel",
    "RunnerResult",
    "RunnerSpec",
    "StreamItem",
    "make_runner",
]
