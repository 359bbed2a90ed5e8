"""Request limits (pure checks against the node's policy) and the in-flight concurrency limiter."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import InferenceRequest, estimate_tokens, prompt_material
from fedai_node.runners.base import RunnerModel

CAPACITY_RETRY_AFTER_MS = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt_bytes: int
    max_tokens: int
    job_types: Collection[str]


def effective_max_tokens(model: RunnerModel, limits: Limits) -> int:
    """The largest `max_tokens` this node accepts for `model`: its own cap and the model's, whichever is lower."""
    return min(limits.max_tokens, model.max_tokens)


def check_request(
    req: InferenceRequest, models: Mapping[str, RunnerModel], limits: Limits, *, streaming: bool = False
) -> RunnerModel:
    """Validate `req` against the node's limits; return the model it names. Raises `FedaiError`.

    `stream=true` belongs on `/infer/stream` (`streaming`); `/infer/stream` serves either value."""
    prompt_bytes = len(prompt_material(req))
    if prompt_bytes > limits.max_prompt_bytes:
        raise FedaiError(ErrorCode.TOO_LARGE, f"prompt is {prompt_bytes} bytes, limit is {limits.max_prompt_bytes}")
    model = models.get(req.model)
    if model is None:
        raise FedaiError(ErrorCode.UNKNOWN_MODEL, f"model {req.model!r} is not served by this node")
    cap = effective_max_tokens(model, limits)
    if req.max_tokens > cap:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"max_tokens {req.max_tokens} is over this node's limit of {cap}")
    needed = estimate_tokens(prompt_bytes) + req.max_tokens
    if needed > model.context_window:
        raise FedaiError(
            ErrorCode.INVALID_REQUEST,
            f"estimated prompt tokens plus max_tokens ({needed}) exceed the context window of {model.context_window}",
        )
    if req.job_type is not None and req.job_type not in limits.job_types:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"job_type {req.job_type!r} is not served by this node")
    if req.stream and not streaming:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "stream=true requests go to /infer/stream")
    return model


class InFlight:
    """Counts requests being served and refuses new ones at the limit (`capacity_exceeded` 429).

    Single event loop: check and increment happen with no await in between, so no lock is needed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def acquire(self) -> None:
        if self.count >= self.limit:
            raise FedaiError(
                ErrorCode.CAPACITY_EXCEEDED,
                f"node is at capacity ({self.limit} in flight)",
                retry_after_ms=CAPACITY_RETRY_AFTER_MS,
            )
        self.count += 1

    def release(self) -> None:
        if self.count <= 0:
            raise RuntimeError("InFlight.release without a matching acquire")
        self.count -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
