"""`POST /infer/stream` and `POST /infer/cancel` (contract: docs/runners.md, "Streaming and cancel").

A stream runs the same checks as `/infer` first; a refusal is an ordinary HTTP error. Then each delta the
runner yields is written at once as `event: chunk` whose data is a node-signed stream.chunk (kind 21040,
`p` = the router, `e` = the request, content `StreamChunk{seq, delta}`, seq 0, 1, 2, ...). The status line
goes out with the first chunk, so a runner failure before any output is still an ordinary HTTP error. The
stream ends with exactly one of:

- `event: done`, data = `NodeReply{response, metering}` as `/infer` answers, output = the concatenated deltas;
  finish_reason `cancelled` (and usage counting only what was produced) after `/infer/cancel`;
- `event: error`, data = `{"error": {"code", "message"}}`, when the runner fails or times out mid-stream, or
  crosses a stream bound: NODE_STREAM_IDLE_S without a delta (keep-alive comments and empty events from the
  model server are not deltas), NODE_STREAM_MAX_OUTPUT_BYTES or NODE_STREAM_MAX_CHUNKS (the total is
  NODE_RUNNER_TIMEOUT_MS). The runner is stopped; a delta that would cross a bound is not sent.

A paid stream (docs/payments.md#paid-streams) has its forwarded payment checked and claimed like `/infer`
before anything runs; the claim is consumed once the first event went out (the node did work and meters it)
and released when the stream failed before that (the router may retry with the same proof). Once it ended the
node settles its share on what it produced (`fedai_node.stream_payment`): stated in the `done` event's metering
record, the unused part refunded as for `/infer`, also for a stream cut short.

If the router's connection drops, generation stops (the runner's HTTP response is closed), the partial usage
is counted in the metrics and logs, and the capacity slot is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fedai.observability.tracing import annotate, span
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferCancel
from fedai.service.http import error_response, event_response
from fedai.service.sse import format_sse
from fedai.service.stream_limits import StreamBudget, StreamLimits
from fedai.service.tasks import cancel_and_wait
from fedai_node.admission import Admission
from fedai_node.catalog import ModelCatalog
from fedai_node.metrics import NodeMetrics
from fedai_node.payments import Held as PaymentHeld
from fedai_node.payments import NodePayments
from fedai_node.reply import ReplySigner
from fedai_node.runners.base import Runner, RunnerError, RunnerResult
from fedai_node.serving import Admitted, as_protocol_error, failure_response
from fedai_node.stream_payment import StreamPayment

log = logging.getLogger("fedai_node")
_encode = msgspec.json.Encoder().encode

CANCELLED = "cancelled"  # the router sent /infer/cancel
DISCONNECTED = "disconnected"  # the router's connection dropped
END_WRITE_TIMEOUT_S = 10.0
_CANCEL_KINDS = frozenset({Kind.INFER_CANCEL})
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not buffer
]


class LiveStream(Response):
    """One `/infer/stream` in progress: the ASGI response that runs the generation and writes its events.

    `on_end` runs once when it is over, whatever happened (the endpoint forgets the stream and frees its slot).
    """

    def __init__(
        self,
        admitted: Admitted,
        *,
        runner: Runner,
        signer: ReplySigner,
        catalog: ModelCatalog,
        metrics: NodeMetrics,
        limits: StreamLimits,
        timeout_ms: int,
        on_end: Callable[[LiveStream], None],
        payment: StreamPayment | None = None,
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self.admitted = admitted
        self.request_id = admitted.event.id
        self.router = admitted.event.pubkey
        self.parts: list[str] = []  # deltas written, in order: parts[seq]
        self.stop_reason: str | None = None
        self.ttft_ms: float | None = None
        self._runner = runner
        self._signer = signer
        self._catalog = catalog
        self._metrics = metrics
        self._limits = limits.for_request(admitted.req.max_tokens)
        self._timeout_ms = timeout_ms
        self._on_end = on_end
        self._payment = payment  # a paid stream: its claim and the settlement of its share
        self._task: asyncio.Task[RunnerResult | None] | None = None
        self._sending = False
        self._started = False

    def stop(self, reason: str) -> None:
        """Stop generating (first reason wins). A chunk being written is finished first, so every chunk the
        router received is part of the final output."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._task is not None and not self._task.done() and not self._sending:
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome, result = "aborted", None
        try:
            with span("node.stream", {"fedai.model": self.admitted.req.model}):
                outcome, result = await self._serve(scope, receive, send)
                annotate({"fedai.outcome": outcome})
        finally:
            self._on_end(self)
            self._account(outcome, result)
            if self._payment is not None:
                await self._payment.end(self._started, result)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> tuple[str, RunnerResult | None]:
        """Generate, then end the stream: (the outcome, the usage to count)."""
        t0 = time.perf_counter()
        generation = await self._run(receive, send)
        latency_ms = (time.perf_counter() - t0) * 1000
        result, failure = self._outcome(generation)
        if failure is not None:
            if self._started:
                await self._end(send, "error", _encode(failure.to_dict()))
            else:  # nothing written yet: an ordinary HTTP error the router can fail over on
                await error_response(failure)(scope, receive, send)
            return failure.code.value, self._partial()
        assert result is not None
        if self.stop_reason == DISCONNECTED:
            return DISCONNECTED, result  # nobody left to tell
        outcome = "ok" if result.finish_reason != CANCELLED else CANCELLED
        if outcome == "ok":
            self._catalog.observe_latency(self.admitted.req.model, latency_ms)
        statement = None if self._payment is None else self._payment.statement(result)
        await self._end(send, "done", self._signer.reply(self.admitted, result, latency_ms, statement))
        return outcome, result

    async def _run(self, receive: Receive, send: Send) -> asyncio.Task[RunnerResult | None]:
        """The generation, run until it ends or the router's connection drops (which stops it)."""
        generation = self._task = asyncio.create_task(self._generate(send), name="fedai-node-stream")
        if self.stop_reason is not None:  # cancelled before it began
            generation.cancel()
        watcher = asyncio.create_task(_disconnect(receive), name="fedai-node-stream-watch")
        try:
            await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not generation.done():
                self.stop(DISCONNECTED)
                await asyncio.wait({generation})
        finally:
            await cancel_and_wait([watcher])
            if not generation.done():  # we are being cancelled ourselves (shutdown)
                generation.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await generation
        return generation

    def _outcome(self, generation: asyncio.Task[RunnerResult | None]) -> tuple[RunnerResult | None, FedaiError | None]:
        """The result to send (complete, or partial after a stop) or the failure to report."""
        exc = None if generation.cancelled() else generation.exception()
        done = None if generation.cancelled() or exc is not None else generation.result()
        if done is not None:  # finished (even if a stop came too late to matter)
            return RunnerResult("".join(self.parts), done.finish_reason, done.input_tokens, done.output_tokens), None
        if self.stop_reason is not None:  # stopped: whatever the runner raised on the way out is ours
            return self._partial(), None
        fields = {"request": self.request_id[:12], "model": self.admitted.req.model}
        return None, as_protocol_error(exc or RunnerError("generation stopped unexpectedly"), self._timeout_ms, fields)

    def _partial(self) -> RunnerResult:
        output = "".join(self.parts)
        input_tokens, output_tokens = self._runner.partial_usage(self.admitted.req, output, len(self.parts))
        return RunnerResult(output, CANCELLED, input_tokens, output_tokens)

    async def _generate(self, send: Send) -> RunnerResult | None:
        """Run the runner's stream under NODE_RUNNER_TIMEOUT_MS and the stream bounds, writing each delta; None
        if stopped early. Only the wait for the runner's next item counts as idle (not writing to the router)."""
        runner = self._runner
        budget = StreamBudget(self._limits, what="the runner's stream")
        async with asyncio.timeout(self._timeout_ms / 1000):
            with span("node.runner", {"fedai.runner": runner.name, "fedai.stream": True}):
                return await self._drain(send, budget)

    async def _drain(self, send: Send, budget: StreamBudget) -> RunnerResult | None:
        """The runner's items, each delta written as it comes (`_generate` bounds the whole)."""
        runner = self._runner
        async with contextlib.aclosing(runner.stream(self.admitted.req)) as items:
            while True:
                window = asyncio.timeout(budget.window())
                began = budget.clock()
                try:
                    async with window:
                        item = await anext(items)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if window.expired():
                        raise budget.timed_out() from None
                    raise
                budget.waited(budget.clock() - began)
                if isinstance(item, RunnerResult):
                    return item
                if item:
                    budget.delta(item)  # raises before a delta that crosses a bound is written
                    await self._chunk(send, item)
                    if self.stop_reason is not None:
                        return None
        raise RunnerError(f"runner {runner.name!r} ended its stream without a result")

    async def _chunk(self, send: Send, delta: str) -> None:
        event = self._signer.chunk(self.admitted, len(self.parts), delta)
        self._sending = True
        try:
            await self._start(send)
            await send({"type": "http.response.body", "body": format_sse("chunk", event.to_json()), "more_body": True})
        finally:
            self._sending = False
        self.parts.append(delta)
        self._metrics.stream_chunks.inc()
        if self.ttft_ms is None:
            ttft = time.perf_counter() - self.admitted.started
            self.ttft_ms = ttft * 1000
            self._metrics.ttft_seconds.observe(ttft)

    async def _start(self, send: Send) -> None:
        if not self._started:
            self._started = True
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})

    async def _end(self, send: Send, name: str, data: bytes) -> None:
        """The last event. A router that stopped reading cannot hold the slot: the write is bounded."""
        try:
            async with asyncio.timeout(END_WRITE_TIMEOUT_S):
                await self._start(send)
                await send({"type": "http.response.body", "body": format_sse(name, data), "more_body": False})
        except TimeoutError:
            log.warning("stream end not delivered", extra={"request": self.request_id[:12], "event": name})

    def _account(self, outcome: str, result: RunnerResult | None) -> None:
        """Metrics and one log line: ids, counts and timings, never the prompt or the output."""
        metrics = self._metrics
        wall = time.perf_counter() - self.admitted.started
        metrics.streams.labels(outcome).inc()
        metrics.stream_seconds.observe(wall)
        if outcome in (CANCELLED, DISCONNECTED):
            metrics.cancelled.labels(outcome).inc()
        fields: dict[str, Any] = {
            "request": self.request_id[:12],
            "model": self.admitted.req.model,
            "code": outcome,
            "chunks": len(self.parts),
            "wall_ms": round(wall * 1000, 2),
            "ttft_ms": round(self.ttft_ms, 2) if self.ttft_ms is not None else None,
        }
        if result is not None:
            metrics.count_usage(result)
            fields.update(input_tokens=result.input_tokens, output_tokens=result.output_tokens)
        log.info("infer_stream", extra=fields)


async def _disconnect(receive: Receive) -> None:
    """Return when the client's connection is gone (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class StreamRegistry:
    """The streams in progress, by request id, so `/infer/cancel` can find them."""

    def __init__(self) -> None:
        self._live: dict[str, LiveStream] = {}

    def add(self, live: LiveStream) -> None:
        self._live[live.request_id] = live

    def remove(self, live: LiveStream) -> None:
        if self._live.get(live.request_id) is live:
            del self._live[live.request_id]

    def get(self, request_id: str) -> LiveStream | None:
        return self._live.get(request_id)

    def __len__(self) -> int:
        return len(self._live)


class StreamEndpoints:
    """`POST /infer/stream` and `POST /infer/cancel`, and the streams in progress between them."""

    def __init__(
        self,
        *,
        admission: Admission,
        runner: Runner,
        catalog: ModelCatalog,
        signer: ReplySigner,
        metrics: NodeMetrics,
        limits: StreamLimits,
        timeout_ms: int,
        payments: NodePayments,
    ) -> None:
        self._admission = admission
        self._runner = runner
        self._catalog = catalog
        self._signer = signer
        self._metrics = metrics
        self._limits = limits
        self._timeout_ms = timeout_ms
        self._payments = payments
        self.live = StreamRegistry()

    async def open(self, request: Request) -> Response:
        """The checks of `/infer`, then a `LiveStream` (which frees the slot when it ends)."""
        started = time.perf_counter()
        fields: dict[str, Any] = {"request": "-", "model": "-"}
        try:
            admitted = await self._admission.admit(request, started, fields, streaming=True)
            held = await self._hold(admitted)
        except Exception as exc:  # noqa: BLE001 - every refusal is answered with its code
            response, code = failure_response(exc, self._timeout_ms, fields)
            self._metrics.streams.labels(code).inc()
            log.info("infer_stream", extra={**fields, "status": response.status_code, "code": code})
            return response
        live = LiveStream(
            admitted,
            runner=self._runner,
            signer=self._signer,
            catalog=self._catalog,
            metrics=self._metrics,
            limits=self._limits,
            timeout_ms=self._timeout_ms,
            on_end=self._ended,
            payment=None if held is None else StreamPayment(self._payments, held, self._signer, admitted),
        )
        self.live.add(live)
        return live

    async def _hold(self, admitted: Admitted) -> PaymentHeld | None:
        """The payment of an admitted stream, checked and claimed; refused, the stream's slot is freed."""
        try:
            return await self._payments.hold(admitted)
        except BaseException:
            self._admission.release()
            raise

    def _ended(self, live: LiveStream) -> None:
        self.live.remove(live)
        self._admission.release()

    async def cancel(self, request: Request) -> Response:
        """A trusted router stops a stream it opened; answered with a signed ACK."""
        fields: dict[str, Any] = {"request": "-", "cancel": "-"}
        try:
            opened, _ = await self._admission.open(request, InferCancel, _CANCEL_KINDS)
            fields.update(request=opened.payload.request[:12], cancel=opened.event.id[:12])
            live = self.live.get(opened.payload.request)
            if live is None or live.router != opened.event.pubkey:  # another router's stream is not ours to stop
                raise FedaiError(ErrorCode.INVALID_REQUEST, "no such request in progress")
            await self._admission.claim(opened.event)
            live.stop(CANCELLED)
            response, code = event_response(self._signer.ack(opened.event, CANCELLED)), "ok"
        except Exception as exc:  # noqa: BLE001 - every refusal is answered with its code
            response, code = failure_response(exc, self._timeout_ms, fields)
        log.info("infer_cancel", extra={**fields, "status": response.status_code, "code": code})
        return response
