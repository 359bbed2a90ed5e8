"""Relaying a node's stream to the caller: open it through the failover loop, verify each event, write it in the
caller's format (`Sink`), and finish with the stored, verified chain (`fedai_router.completion`).

The router fails over to another node only until the node's first chunk; after that a failure is an `error`
event, never a silent end. If the caller goes away or a bound trips, the router tells the node to stop (signed
infer.cancel), reads what it produced and stores its metering. A paid stream's fee is settled on the node's
metering like `/infer`'s (docs/payments.md#paid-streams): stated in the `done` answer, its unused part refunded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Protocol

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferCancel, InferenceRequest, StreamChunk
from fedai.service.sse import SSEError, SSEvent
from fedai.service.stream_limits import StreamBudget, StreamCapExceeded, StreamLimits
from fedai_router.background import Background
from fedai_router.claims import Claims
from fedai_router.completion import Completion, Metered, Origin
from fedai_router.dispatch import Dispatcher
from fedai_router.failure import Failures
from fedai_router.metrics import RouterMetrics
from fedai_router.node_state import NodeState
from fedai_router.node_stream import NodeStream, error_event, open_node_stream
from fedai_router.outbound import Outbound
from fedai_router.paid import Held, Paid
from fedai_router.planning import Plan, Planner
from fedai_router.settlement import node_statement
from fedai_router.verify import Binding, Verified

log = logging.getLogger("fedai.router.streaming")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CANCEL_GRACE_S = 10.0
ROUTE = "infer_stream"  # what an error inside a stream is logged as

OnAnswer = Callable[[Event], Awaitable[None]]
OnUnstarted = Callable[[], Awaitable[None]]


class Sink(Protocol):
    """How a stream is written for the caller: fedai's own SSE events, or OpenAI's chunk format."""

    def chunk(self, chunk: StreamChunk) -> bytes: ...

    def done(self, answer: Event, verified: Verified) -> bytes: ...

    def error(self, err: FedaiError) -> bytes: ...


class RelayResponse(StreamingResponse):
    """A StreamingResponse that always closes its generator when the response ends, so a client disconnect
    runs the relay's clean-up (cancel the node, meter what it produced) at once, not at garbage collection.

    The whole response lasts at most `deadline_s`: a client that stops reading blocks our writes, where the
    node stream's own bounds are never checked; past the deadline the response is abandoned and the relay's
    clean-up stops the node."""

    def __init__(self, body: AsyncIterator[bytes], deadline_s: float, unstarted: OnUnstarted | None = None) -> None:
        super().__init__(body, media_type="text/event-stream", headers=SSE_HEADERS)
        self.deadline_s = deadline_s
        self.unstarted = unstarted  # run at the end: undoes what was held for a body that never ran

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = asyncio.timeout(self.deadline_s)
        try:
            async with deadline:
                await super().__call__(scope, receive, send)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.info("stream response abandoned: the client stopped reading", extra={"deadline_s": self.deadline_s})
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            if self.unstarted is not None:
                await self.unstarted()


class StreamRelay:
    def __init__(
        self,
        *,
        keys: Keys,
        dispatcher: Dispatcher,
        outbound: Outbound,
        planner: Planner,
        claims: Claims,
        completion: Completion,
        failures: Failures,
        metrics: RouterMetrics,
        background: Background,
        limits: StreamLimits,
        paid: Paid,
    ) -> None:
        self.keys = keys  # signs the cancel sent to a node
        self.dispatcher = dispatcher
        self.outbound = outbound
        self.planner = planner  # gives back the quote of a request no node served
        self.claims = claims
        self.completion = completion
        self.failures = failures
        self.metrics = metrics
        self.background = background  # runs the cancel-and-meter after the caller is gone
        self.limits = limits  # ROUTER_STREAM_*
        self.paid = paid  # settles a paid stream's proof

    def respond(
        self,
        origin: Origin,
        payload: InferenceRequest,
        plan: Plan,
        sink: Sink,
        *,
        claim: Event | None = None,
        on_answer: OnAnswer | None = None,
        held: Held | None = None,
    ) -> Response:
        """Answer at once with the stream's headers, then open the node stream (claiming `claim`'s id in Postgres
        meanwhile) and relay it. Everything that depends only on the request was checked before this point and got
        a plain HTTP error; what depends on the nodes (all failed before a first chunk, a replay caught by another
        replica) arrives as the stream's typed error event, and gives back the quote the request spent. Sending
        the headers while the node starts saves their round trip from the time to the first token. A paid stream's
        proof (`held`) is consumed once the node stream opened (the node did work from then on, and meters it:
        docs/payments.md#paid-streams) and released when none did, or when the caller left before the body ran."""
        began: list[bool] = []

        async def unstarted() -> None:
            if not began:  # the caller went away before the body ran: nothing was served
                await self.planner.give_back(plan.quote)
                if held is not None:
                    await self.paid.release(held)

        async def body() -> AsyncIterator[bytes]:
            began.append(True)
            arrived, started = time.perf_counter(), time.monotonic()
            opening = partial(self._open, origin, payload, plan, started)

            async def opened() -> NodeStream:
                if claim is None:
                    return await opening()
                return await self.claims.while_claiming(claim, opening, self._abandon, local=False)

            try:
                stream = await (opened() if held is None else self.paid.while_held(held, opened))
            except Exception as exc:  # noqa: BLE001 - the stream's typed error event, whatever failed
                await self.planner.give_back(plan.quote)  # no node served it
                err = self.failures.in_stream(exc, ROUTE)
                self.metrics.streams.labels("error").inc()
                yield sink.error(err)
                return
            self.metrics.ttft.observe(time.perf_counter() - arrived)
            async for data in self._relay(origin, stream, sink, on_answer, held):
                yield data

        return RelayResponse(body(), deadline_s=self.limits.max_s + self.limits.idle_s, unstarted=unstarted)

    async def _open(self, origin: Origin, payload: InferenceRequest, plan: Plan, started: float) -> NodeStream:
        """Open a node stream through the failover loop; the node stays in flight until the relay ends. The total
        duration counts from `started` (the request's arrival, monotonic clock) across attempts; idle time
        restarts with each attempt. Its metering is held to the plan's limits (a breach after the first chunk is
        the stream's typed error)."""
        limits = self.limits.for_request(payload.max_tokens)
        timeout = self.dispatcher.stream_timeout

        async def call(node: NodeState, binding: Binding) -> NodeStream:
            budget = StreamBudget(limits, what="node stream", started=started)
            return await open_node_stream(self.outbound, timeout, node, binding, budget)

        attempted = await self.dispatcher.failover(
            origin, payload, plan.candidates, call, limits=plan.limits, hold=True
        )
        stream = attempted.result
        stream.started, stream.attempt = attempted.started, attempted.attempt
        return stream

    async def _abandon(self, stream: NodeStream) -> None:
        """A stream opened for a request that turned out to be a replay: drop it (the node sees the hang-up)."""
        stream.close()
        self.dispatcher.abandon(stream.node)

    async def _relay(
        self, origin: Origin, stream: NodeStream, sink: Sink, on_answer: OnAnswer | None, held: Held | None
    ) -> AsyncIterator[bytes]:
        """Verify each node event, write it for the caller, and finish with the stored, verified chain."""
        ending = "cancel"  # how the node stream ends: release (clean), close (failed), cancel (stop and meter)
        first_chunk_at: float | None = None
        try:
            async for event in stream.events():
                if event.event == "chunk":
                    chunk = stream.chunk(event)
                    first_chunk_at = first_chunk_at or time.perf_counter()
                    yield sink.chunk(chunk)
                elif event.event == "done":
                    verified = stream.done(event)
                    answer = await self._answer(origin, stream.metered(verified), held)
                    if on_answer is not None:
                        await on_answer(answer)
                    ending = "release"
                    await self._finished(stream, first_chunk_at)
                    yield sink.done(answer, verified)
                    return
                elif event.event == "error":
                    raise error_event(event)
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, "node stream ended without a result")
        except StreamCapExceeded as capped:  # the node stays in flight until it is stopped and metered
            await self._capped(origin, stream, capped)
            yield sink.error(capped)
        except (FedaiError, TimeoutError, aiohttp.ClientError, SSEError) as exc:
            ending = "close"
            yield sink.error(await self._broke(origin, stream, exc))
        finally:
            await self._end(origin, stream, ending, held)

    async def _finished(self, stream: NodeStream, first_chunk_at: float | None) -> None:
        """The stream ended well: the node's time to the first chunk is its latency."""
        ttft = (first_chunk_at or time.perf_counter()) - stream.started
        await self.dispatcher.finish(stream.node, stream.started, latency_s=ttft)
        self.metrics.streams.labels("done").inc()

    async def _capped(self, origin: Origin, stream: NodeStream, capped: StreamCapExceeded) -> None:
        log.info("node stream bound reached", extra={"node": stream.node.pubkey[:16], "cap": capped.cap})
        elapsed_ms = (time.perf_counter() - stream.started) * 1000
        await self.dispatcher.penalise(origin, stream.node, stream.attempt, capped, elapsed_ms)
        self.metrics.streams.labels("capped").inc()

    async def _broke(self, origin: Origin, stream: NodeStream, exc: BaseException) -> FedaiError:
        """The node failed after its first event: it leaves our in-flight count and is penalised."""
        err = exc if isinstance(exc, FedaiError) else self.outbound.stream_failure("node", exc)
        self.dispatcher.abandon(stream.node)
        elapsed_ms = (time.perf_counter() - stream.started) * 1000
        await self.dispatcher.penalise(origin, stream.node, stream.attempt, err, elapsed_ms)
        self.metrics.streams.labels("error").inc()
        return err

    async def _answer(self, origin: Origin, metered: Metered, held: Held | None) -> Event:
        """The signed answer at `done`; a paid stream's states the router's settlement and opens its refund."""
        settlement = self.paid.settlement
        if held is None or settlement is None:
            return await self.completion.answer(origin, metered)
        return await settlement.settled_answer(self.completion, origin, metered, held.fee, held.forwarded)

    async def _settle_cancelled(self, held: Held | None, metered: Metered) -> None:
        """A paid stream cut short, metered after the cancel: the router's statement on that metering (no answer
        carries it), both statements kept, the fee's refund opened (docs/payments.md#paid-streams)."""
        settlement = self.paid.settlement
        if held is None or settlement is None:
            return
        refund_to = held.forwarded.refund_to
        statement = settlement.statement(held.fee, metered.record, refund_to)
        await settlement.after_answer(statement, refund_to, node_statement(metered.record, held.forwarded.preimage))

    async def _end(self, origin: Origin, stream: NodeStream, ending: str, held: Held | None) -> None:
        if ending == "release":
            await stream.release()
        elif ending == "close":
            stream.close()
        else:  # the caller went away mid-stream, or a bound tripped: stop the node, meter what it produced
            self.background.spawn(self._cancel_and_meter(origin, stream, held), "stream cancel")

    async def _cancel_and_meter(self, origin: Origin, stream: NodeStream, held: Held | None) -> None:
        """After a client disconnect or a tripped bound: signed infer.cancel to the node, then drain its stream to
        the `done` with the metering of what it produced, and store that. The drain gets CANCEL_GRACE_S and doubled
        count bounds (what was already in flight); the node leaves our in-flight count when this ends. A paid
        stream's fee is settled on that metering: its refund opened, though no answer carries the statement (the
        caller is gone, or got the bound's error event)."""
        node = stream.node
        capped = stream.budget.tripped
        stream.budget.grace(CANCEL_GRACE_S)
        try:
            async with asyncio.timeout(CANCEL_GRACE_S):
                await self._cancel(stream)
                async for event in stream.events():
                    if await self._drained(origin, stream, event, held, counted=capped is not None):
                        return
        except (FedaiError, TimeoutError, aiohttp.ClientError, SSEError) as exc:
            log.info("cancelled stream not metered", extra={"node": node.pubkey[:16], "error": type(exc).__name__})
        finally:
            stream.close()
            self.dispatcher.abandon(node)

    async def _cancel(self, stream: NodeStream) -> None:
        node = stream.node
        cancel = seal(
            self.keys, Kind.INFER_CANCEL, InferCancel(request=stream.binding.forwarded.id), to=node.pubkey, nonce=True
        )
        reply = await self.outbound.post_event(
            node.endpoint + "/infer/cancel",
            cancel,
            target="node",
            client_timeout=self.dispatcher.timeout,
            limit=64 * 1024,
        )
        if reply.status != 200:
            log.info("node refused the cancel", extra={"node": node.pubkey[:16], "status": reply.status})

    async def _drained(
        self, origin: Origin, stream: NodeStream, event: SSEvent, held: Held | None, *, counted: bool
    ) -> bool:
        """One event of a cancelled stream; True at its end (its metering stored at `done`). A capped stream was
        `counted` as such already."""
        if event.event == "chunk":
            stream.chunk(event)
            return False
        if event.event == "done":
            metered = stream.metered(stream.done(event))
            await self.completion.record(origin, metered)
            await self._settle_cancelled(held, metered)
            if not counted:
                self.metrics.streams.labels("cancelled").inc()
            return True
        return event.event == "error"
