"""Model runners, one module each, chosen by `NODE_RUNNER` through `make_runner`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedai_node.runners.base import Estimate, Runner, RunnerError, RunnerModel, RunnerResult

if TYPE_CHECKING:
    from fedai_node.config import NodeSettings

RUNNER_NAMES = ("mock",)


def make_runner(settings: NodeSettings) -> Runner:
    """Build the runner `settings.runner` names (validated by the config already)."""
    if settings.runner == "mock":
        from fedai_node.runners.mock import MockRunner

        return MockRunner(settings.model_id, settings.context_window, settings.mock_delay_ms)
    raise ValueError(f"unknown runner {settings.runner!r}; available: {', '.join(RUNNER_NAMES)}")


__all__ = ["RUNNER_NAMES", "Estimate", "Runner", "RunnerError", "RunnerModel", "RunnerResult", "make_runner"]
