"""Forward a client's request to a node, verify everything the node signs, fail over before the first byte.

A node's answer is accepted only if its infer.response and metering record are signed by that node,
addressed to this router, bound (`e`) to the request we forwarded, and agree with each other, with the
prompt we sent and with the node's advertised price. Anything else counts as a node failure.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import aiohttp
import msgspec

from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    NodeReply,
    price_msat,
    prompt_sha256,
)
from fedai.service.client import ReplyTooLarge, post_event
from fedai.store.health import record_attempt
from fedai_router.metrics import RouterMetrics
from fedai_router.node_state import NodeState
from fedai_router.registry import Registry
from fedai_router.retry import RetryBudget
from fedai_router.scheduler import Candidate

log = logging.getLogger("fedai.router.dispatch")

MAX_NODE_REPLY_BYTES = 8 * 1024 * 1024
_decode_reply = msgspec.json.Decoder(NodeReply).decode

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


class NodeFault(FedaiError):
    """A protocol violation by the node: retry elsewhere and quarantine the node."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UPSTREAM_ERROR, message)


@dataclass(frozen=True, slots=True)
class Served:
    node: NodeState
    forwarded: Event
    response: Event
    metering: Event
    record: MeteringRecord
    attempts: int


class Dispatcher:
    def __init__(
        self,
        keys: Keys,
        session: aiohttp.ClientSession,
        registry: Registry,
        metrics: RouterMetrics,
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
        self.session = session
        self.registry = registry
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self.skew_s = skew_s

    async def serve(self, client_event: Event, request: InferenceRequest, candidates: list[Candidate]) -> Served:
        """Try candidates in order until one answers with a verified response: at most `max_attempts` calls,
        and each retry only if the router-wide retry budget allows it. Every failed attempt is recorded."""
        expected_prompt = prompt_sha256(request)
        forwarded_payload = msgspec.structs.replace(request, client=client_event.pubkey, origin=client_event.id)
        self.budget.on_request()
        last: FedaiError | None = None
        attempt = 0
        for candidate in candidates:
            node = candidate.node
            if node.load >= node.capacity or node.cooldown_until > time.time():
                continue  # filled up or failed for a concurrent request since ranking
            if attempt == self.max_attempts:
                break
            if last is not None:
                if not self.budget.try_retry():
                    self.metrics.failovers.labels("budget_exhausted").inc()
                    break
                self.metrics.failovers.labels(last.code.value).inc()
            attempt += 1
            forwarded = seal(self.keys, Kind.INFER_REQUEST, forwarded_payload, to=node.pubkey, nonce=True)
            self.registry.begin(node)
            started = time.perf_counter()
            try:
                response, metering, record = await self._call(node, candidate, forwarded, expected_prompt)
            except FedaiError as err:
                self.registry.end(node)
                self.metrics.attempts.labels(err.code.value).inc()
                if err.code not in _RETRYABLE and not isinstance(err, NodeFault):
                    raise
                latency_ms = (time.perf_counter() - started) * 1000
                await self._penalise(client_event, node, attempt, err, latency_ms)
                last = err
                continue
            except BaseException:
                self.registry.end(node)
                raise
            self.registry.end(node)
            elapsed = time.perf_counter() - started
            self.metrics.attempts.labels("ok").inc()
            self.metrics.node_latency.observe(elapsed)
            await self.registry.succeeded(node, elapsed * 1000)
            return Served(node, forwarded, response, metering, record, attempt)
        if last is None:
            raise FedaiError(ErrorCode.NO_CAPACITY, "every eligible node filled up meanwhile", retry_after_ms=1000)
        raise FedaiError(
            last.code if last.code == ErrorCode.UPSTREAM_TIMEOUT else ErrorCode.UPSTREAM_ERROR,
            f"{attempt} node(s) tried, none answered correctly; last: {last.message}",
        )

    async def _penalise(self, client_event: Event, node: NodeState, attempt: int, err: FedaiError,
                        latency_ms: float) -> None:  # fmt: skip
        log.info("node attempt failed", extra={"node": node.pubkey[:16], "attempt": attempt, "code": err.code.value})
        retry_s = err.retry_after_ms / 1000 if err.retry_after_ms is not None else None
        await self.registry.failed(node, err.code.value, retry_after_s=retry_s, quarantine=isinstance(err, NodeFault))
        await record_attempt(self.registry.pool, client_event.id, node.pubkey, attempt, err.code.value, latency_ms)

    async def _call(
        self, node: NodeState, candidate: Candidate, forwarded: Event, expected_prompt: str
    ) -> tuple[Event, Event, MeteringRecord]:
        try:
            reply = await post_event(
                self.session,
                node.endpoint + "/infer",
                forwarded,
                client_timeout=self.timeout,
                limit=MAX_NODE_REPLY_BYTES,
            )
        except ReplyTooLarge:
            raise NodeFault("node reply is too large") from None
        except TimeoutError:
            raise FedaiError(ErrorCode.UPSTREAM_TIMEOUT, "node did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"node unreachable ({type(exc).__name__})") from None
        if reply.status != 200:
            try:
                err = FedaiError.from_dict(msgspec.json.decode(reply.body), reply.status)
            except msgspec.DecodeError:
                err = FedaiError(ErrorCode.UPSTREAM_ERROR, f"node answered HTTP {reply.status}")
            if err.retry_after_ms is None and reply.retry_after and reply.retry_after.isdigit():
                err.retry_after_ms = int(reply.retry_after) * 1000
            raise err
        return self._verify(node, candidate, forwarded, expected_prompt, reply.body)

    def _verify(
        self, node: NodeState, candidate: Candidate, forwarded: Event, expected_prompt: str, body: bytes
    ) -> tuple[Event, Event, MeteringRecord]:
        try:
            reply = _decode_reply(body)
        except msgspec.DecodeError:
            raise NodeFault("node reply is not a {response, metering} pair of events") from None
        try:
            resp = open_event(
                reply.response,
                InferenceResponse,
                kinds=(Kind.INFER_RESPONSE,),
                recipient=self.keys.pubkey,
                signers=(node.pubkey,),
                reply_to=forwarded.id,
                skew_s=self.skew_s,
            )
            meter = open_event(
                reply.metering,
                MeteringRecord,
                kinds=(Kind.METERING_RECORD,),
                recipient=self.keys.pubkey,
                signers=(node.pubkey,),
                reply_to=forwarded.id,
                skew_s=self.skew_s,
            )
        except FedaiError as err:
            raise NodeFault(f"node reply failed verification: {err.code.value}: {err.message}") from None
        record, answer = meter.payload, resp.payload
        problems = []
        if record.request != forwarded.id:
            problems.append("metering.request")
        if record.response != resp.event.id:
            problems.append("metering.response")
        if record.prompt_sha256 != expected_prompt:
            problems.append("prompt_sha256")
        if record.output_sha256 != hashlib.sha256(answer.output.encode()).hexdigest():
            problems.append("output_sha256")
        if (record.input_tokens, record.output_tokens) != (answer.usage.input_tokens, answer.usage.output_tokens):
            problems.append("usage")
        if record.model != candidate.model.id or answer.model != candidate.model.id:
            problems.append("model")
        if record.price_msat > price_msat(candidate.model.pricing, record.input_tokens, record.output_tokens):
            problems.append("price above advertised")
        if problems:
            raise NodeFault("node metering does not match its response: " + ", ".join(problems))
        return resp.event, meter.event, record
