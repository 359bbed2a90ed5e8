"""What `/infer` and `/infer/stream` share: an admitted request, and any failure as the protocol error (and
typed response) the router gets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import Response

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.messages import InferenceRequest, Pricing
from fedai.service.http import error_response
from fedai_node.runners.base import RunnerError

log = logging.getLogger("fedai_node")


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed every check and holds one capacity slot (whoever serves it releases the slot)."""

    event: Event  # the router's infer.request
    req: InferenceRequest  # its payload, `model` resolved to the served id (aliases)
    bytes_in: int
    started: float  # perf_counter when the request arrived
    pricing: Pricing | None = None  # what it is charged, fixed at admission (None: the signer's price now)


def runner_failure(exc: RunnerError) -> FedaiError:
    """The protocol error for a runner failure: the runner chose the code; its message carries no content."""
    return FedaiError(exc.code, f"runner: {exc}", retry_after_ms=exc.retry_after_ms)


def timeout_error(timeout_ms: int) -> FedaiError:
    return FedaiError(ErrorCode.UPSTREAM_TIMEOUT, f"runner did not answer within {timeout_ms} ms")


def as_protocol_error(exc: BaseException, timeout_ms: int, fields: Mapping[str, object]) -> FedaiError:
    """Any failure while serving, as the error to answer with. Unknown exceptions become `internal` and are
    logged by type only (their text may carry data)."""
    if isinstance(exc, FedaiError):
        return exc
    if isinstance(exc, RunnerError):
        return runner_failure(exc)
    if isinstance(exc, TimeoutError):  # the node's own NODE_RUNNER_TIMEOUT_MS (runners map theirs)
        return timeout_error(timeout_ms)
    log.error("serving failed", extra={**fields, "error_type": type(exc).__name__})
    return FedaiError(ErrorCode.INTERNAL, "internal error")


def failure_response(exc: BaseException, timeout_ms: int, fields: Mapping[str, object]) -> tuple[Response, str]:
    """The typed error response for any failure (see `as_protocol_error`), and its code for metrics and logs."""
    err = as_protocol_error(exc, timeout_ms, fields)
    return error_response(err), err.code.value
