"""Forward a client's request to nodes, with failover before the first byte reaches the client.

`Dispatcher.failover` is the one loop both paths share: pick the next candidate that still has room, seal a
router-signed copy of the request for it, call it, and on a node failure (unreachable, slow, busy, or a
protocol breach) record the attempt, cool the node down and try the next within `max_attempts` and the
retry budget. `serve` is the unary call; `fedai_router.streaming` opens streams through the same loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import aiohttp
import asyncpg
import msgspec

from fedai.observability.tracing import annotate, span
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, MeteringRecord, prompt_sha256
from fedai_router.completion import Metered, Origin
from fedai_router.metrics import RouterMetrics
from fedai_router.node_state import NodeState
from fedai_router.outbound import Outbound
from fedai_router.registry import Registry
from fedai_router.retry import RetryBudget
from fedai_router.scheduler import Candidate
from fedai_router.store.health import record_attempt
from fedai_router.verify import AboveAgreedPrice, Binding, NodeFault, ReplyLimits, Verified, verify_reply

log = logging.getLogger("fedai.router.dispatch")

MAX_NODE_REPLY_BYTES = 8 * 1024 * 1024

# Node errors that say "this node, not this request": try another node.
_RETRYABLE = {
    ErrorCode.CAPACITY_EXCEEDED,
    ErrorCode.RATE_LIMITED,
    ErrorCode.NO_CAPACITY,
    ErrorCode.UNKNOWN_MODEL,
    ErrorCode.UPSTREAM_ERROR,
    ErrorCode.UPSTREAM_TIMEOUT,
    ErrorCode.INTERNAL,
    ErrorCode.FORBIDDEN,  # the node does not trust us (misconfigured node)
    ErrorCode.WRONG_RECIPIENT,  # the endpoint is served by a different key
    ErrorCode.STALE,  # clock trouble on the node
    ErrorCode.REPLAY,
    ErrorCode.INVALID_SIGNATURE,
}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempted(Generic[T]):
    result: T
    node: NodeState
    binding: Binding
    attempt: int
    started: float  # perf_counter at the call


@dataclass(frozen=True, slots=True)
class Served:
    node: NodeState
    forwarded: Event
    response: Event
    metering: Event
    record: MeteringRecord
    attempts: int

    @property
    def metered(self) -> Metered:
        """What completing the request needs (`fedai_router.completion`)."""
        return Metered(self.node.pubkey, self.forwarded, self.response, self.metering, self.record, self.attempts)


def _has_room(candidate: Candidate) -> bool:
    """Not filled up or failed (for a concurrent request) since the ranking."""
    node = candidate.node
    return node.load < node.capacity and node.cooldown_until <= time.time()


def _exhausted(last: FedaiError | None, attempts: int) -> FedaiError:
    """The client's error once no candidate is left to try."""
    if last is None:
        return FedaiError(ErrorCode.NO_CAPACITY, "every eligible node filled up meanwhile", retry_after_ms=1000)
    return FedaiError(
        last.code if last.code == ErrorCode.UPSTREAM_TIMEOUT else ErrorCode.UPSTREAM_ERROR,
        f"{attempts} node(s) tried, none answered correctly; last: {last.code.value}",  # its words may carry detail
    )


class Dispatcher:
    def __init__(
        self,
        keys: Keys,
        outbound: Outbound,
        registry: Registry,
        metrics: RouterMetrics,
        attempts: asyncpg.Pool,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        skew_s: int,
        max_attempts: int,
        budget: RetryBudget,
    ) -> None:
        self.max_attempts = max_attempts
        self.budget = budget
        self.keys = keys
        self.outbound = outbound
        self.registry = registry
        self.metrics = metrics
        self.attempts = attempts  # where failed attempts are recorded (dispatch_attempts)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        # streams: each socket read within the node timeout; the stream's own bounds (total, idle, output) are
        # kept by fedai_router.streaming (ROUTER_STREAM_*), since keep-alive comments reset this one
        self.stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=timeout_s)
        self.skew_s = skew_s

    async def failover(
        self,
        origin: Origin,
        request: InferenceRequest,
        candidates: list[Candidate],
        call: Callable[[NodeState, Binding], Awaitable[T]],
        *,
        limits: ReplyLimits,
        hold: bool = False,
    ) -> Attempted[T]:
        """Try candidates in order until `call` succeeds. Every node's metering is held to `limits`. With `hold`,
        the node stays counted in flight and the caller reports the outcome later (`finish`); otherwise success
        is recorded here."""
        forwarded = msgspec.structs.replace(request, client=origin.client, origin=origin.id)
        expected_prompt = prompt_sha256(request)
        self.budget.on_request()
        last: FedaiError | None = None
        attempt = 0
        for candidate in filter(_has_room, candidates):  # judged as each is reached: others' calls run meanwhile
            if attempt == self.max_attempts or not self._may_retry(last):
                break
            attempt += 1
            binding = self._bind(candidate, forwarded, expected_prompt, limits)
            outcome = await self._attempt(origin, candidate.node, binding, attempt, call)
            if isinstance(outcome, FedaiError):
                last = outcome
                continue
            if not hold:
                await self.finish(outcome.node, outcome.started)
            return outcome
        raise _exhausted(last, attempt)

    def _may_retry(self, last: FedaiError | None) -> bool:
        """After a failed attempt, another one costs a retry from the budget (counted either way)."""
        if last is None:
            return True
        if not self.budget.try_retry():
            self.metrics.failovers.labels("budget_exhausted").inc()
            return False
        self.metrics.failovers.labels(last.code.value).inc()
        return True

    def _bind(self, candidate: Candidate, request: InferenceRequest, prompt: str, limits: ReplyLimits) -> Binding:
        """Seal a router-signed copy of the request for the candidate's node, and what its answer must match."""
        node = candidate.node
        forwarded = seal(self.keys, Kind.INFER_REQUEST, request, to=node.pubkey, nonce=True)
        return Binding(self.keys.pubkey, node.pubkey, candidate.model, forwarded, prompt, self.skew_s, limits)

    async def _attempt(
        self,
        origin: Origin,
        node: NodeState,
        binding: Binding,
        attempt: int,
        call: Callable[[NodeState, Binding], Awaitable[T]],
    ) -> Attempted[T] | FedaiError:
        """One call, counted in flight. A node failure is recorded and returned (try the next node); a failure of
        the request itself is raised."""
        self.registry.begin(node)
        started = time.perf_counter()
        try:
            with span("router.dispatch_attempt", {"fedai.attempt": attempt, "fedai.node": node.pubkey}):
                result = await call(node, binding)
        except FedaiError as err:
            self.registry.end(node)
            self.metrics.attempts.labels(err.code.value).inc()
            if err.code not in _RETRYABLE and not isinstance(err, NodeFault):
                raise
            await self.penalise(origin, node, attempt, err, (time.perf_counter() - started) * 1000)
            return err
        except BaseException:
            self.registry.end(node)
            raise
        return Attempted(result, node, binding, attempt, started)

    async def finish(self, node: NodeState, started: float, latency_s: float | None = None) -> None:
        """A call (or a held stream) ended well: it leaves the node's in-flight count and its latency is recorded."""
        self.registry.end(node)
        elapsed = time.perf_counter() - started if latency_s is None else latency_s
        self.metrics.attempts.labels("ok").inc()
        self.metrics.node_latency.observe(elapsed)
        await self.registry.succeeded(node, elapsed * 1000)

    def abandon(self, node: NodeState) -> None:
        """A held call ended without an outcome to record (a replay's stream dropped, or a stream the relay
        stopped): it leaves the node's in-flight count."""
        self.registry.end(node)

    async def penalise(self, origin: Origin, node: NodeState, attempt: int, err: FedaiError, latency_ms: float) -> None:
        # the reason stays in the operator's log: clients get only the code (no probing oracle, docs/security.md)
        log.info(
            "node attempt failed",
            extra={"node": node.pubkey[:16], "attempt": attempt, "code": err.code.value, "reason": err.message},
        )
        if not isinstance(err, AboveAgreedPrice):  # the client's cap, not the node's health (verify.py)
            retry_s = err.retry_after_ms / 1000 if err.retry_after_ms is not None else None
            await self.registry.failed(
                node, err.code.value, retry_after_s=retry_s, quarantine=isinstance(err, NodeFault)
            )
        await record_attempt(self.attempts, origin.id, node.pubkey, attempt, err.code.value, latency_ms)

    async def serve(
        self, origin: Origin, request: InferenceRequest, candidates: list[Candidate], *, limits: ReplyLimits
    ) -> Served:
        """The unary path: one `/infer` call per attempt, the node's reply verified before it counts."""
        done = await self.failover(origin, request, candidates, self._call, limits=limits)
        v = done.result
        return Served(done.node, done.binding.forwarded, v.response, v.metering, v.record, done.attempt)

    async def _call(self, node: NodeState, binding: Binding) -> Verified:
        url = node.endpoint + "/infer"
        body = await self.outbound.exchange(
            url, binding.forwarded, target="node", client_timeout=self.timeout, limit=MAX_NODE_REPLY_BYTES
        )
        with span("router.verify"):
            verified = verify_reply(body, binding)
            annotate(
                {
                    "fedai.tokens.input": verified.record.input_tokens,
                    "fedai.tokens.output": verified.record.output_tokens,
                }
            )
            return verified
