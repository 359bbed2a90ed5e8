"""Model runners, one module each, chosen by `NODE_RUNNER` through `make_runner`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedai_node.runners.base import Estimate, Runner, RunnerError, RunnerModel, RunnerResult, StreamItem
from fedai_node.runners.http import HttpRunner
from fedai_node.runners.llama_cpp import LlamaCppRunner
from fedai_node.runners.mock import MOCK_MODEL_ID, MockRunner
from fedai_node.runners.openai import OpenAIRunner

if TYPE_CHECKING:
    from fedai_node.config import NodeSettings

_URL_RUNNERS: dict[str, type[LlamaCppRunner | OpenAIRunner | HttpRunner]] = {
    "llama_cpp": LlamaCppRunner,
    "openai": OpenAIRunner,
    "http": HttpRunner,
}
RUNNER_NAMES = (*_URL_RUNNERS, "mock")
URL_RUNNERS = frozenset(_URL_RUNNERS)  # these need NODE_RUNNER_URL


def make_runner(settings: NodeSettings) -> Runner:
    """Build the runner `settings.runner` names (validated by the config already)."""
    name = settings.runner
    if name == "mock":
        return MockRunner(
            settings.model_id or MOCK_MODEL_ID, settings.context_window, settings.mock_delay_ms, settings.mock_token_ms
        )
    cls = _URL_RUNNERS.get(name)
    if cls is None:
        raise ValueError(f"unknown runner {name!r}; available: {', '.join(RUNNER_NAMES)}")
    if settings.runner_url is None:
        raise ValueError(f"runner {name!r} needs NODE_RUNNER_URL")
    return cls(
        settings.runner_url,
        timeout_s=settings.runner_timeout_ms / 1000,
        model_id=settings.model_id,
        context_window=settings.context_window,
        api_key=settings.runner_api_key,
    )


__all__ = [
    "RUNNER_NAMES",
    "URL_RUNNERS",
    "Estimate",
    "Runner",
    "RunnerError",
    "RunnerModel",
    "RunnerResult",
    "StreamItem",
    "make_runner",
]
