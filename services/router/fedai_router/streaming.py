"""POST /infer/stream: the same request as /infer, answered as Server-Sent Events while the node generates.

Events to the client: `chunk` (a router-signed kind-21040 event, `e` = the client's request, content
`{seq, delta}`), then `done` (the router-signed infer.response with the whole verified chain, as /infer), or
`error` (`{"error": {code, message}}`). The router fails over to another node only until the node's first
chunk; after that a failure is an `error` event, never a silent end. If the client goes away, the router
tells the node to stop (signed infer.cancel), reads what it produced and stores its metering.

Every node stream is bounded (`ROUTER_STREAM_*`, fedai.service.stream_limits): total duration, idle time
(keep-alive comments are not activity), output bytes, chunks and bytes on the wire. Before the first chunk a
tripped bound is a node failure like a timeout (failover); after it, the client gets a typed `error` event and
the node is stopped and metered as on a disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import aiohttp
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferCancel, InferenceRequest, InferResult, StreamChunk
from fedai.service.http import error_response, read_body
from fedai.service.sse import SSEDecoder, SSEError, SSEvent, format_sse
from fedai.service.stream_limits import StreamBudget, StreamCapExceeded
from fedai_router.dispatch import MAX_NODE_REPLY_BYTES, Origin, error_from_reply
from fedai_router.failure import typed_failure
from fedai_router.infer import Plan, give_back, plan, unless_served, while_claiming
from fedai_router.node_state import NodeState
from fedai_router.service import RouterService
from fedai_router.store.metering import MeteringEntry
from fedai_router.verify import Binding, NodeFault, Verified, verify_chunk, verify_reply

log = logging.getLogger("fedai.router.streaming")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CANCEL_GRACE_S = 10.0
MAX_CHUNK_EVENT_BYTES = 256 * 1024


class RelayResponse(StreamingResponse):
    """A StreamingResponse that always closes its generator when the response ends, so a client disconnect
    runs the relay's clean-up (cancel the node, meter what it produced) at once, not at garbage collection.

    The whole response lasts at most `deadline_s`: a client that stops reading blocks our writes, where the
    node stream's own bounds are never checked; past the deadline the response is abandoned and the relay's
    clean-up stops the node."""

    def __init__(self, body: AsyncIterator[bytes], deadline_s: float) -> None:
        super().__init__(body, media_type="text/event-stream", headers=SSE_HEADERS)
        self.deadline_s = deadline_s

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


@dataclass
class NodeStream:
    """An open `/infer/stream` call to a node whose first event has arrived."""

    resp: aiohttp.ClientResponse
    decoder: SSEDecoder
    budget: StreamBudget
    pending: list[SSEvent] = field(default_factory=list)
    node: NodeState | None = None
    binding: Binding | None = None
    started: float = 0.0
    attempt: int = 0
    deltas: list[str] = field(default_factory=list)

    async def events(self) -> AsyncIterator[SSEvent]:
        """The node's events; raises `StreamCapExceeded` when the time or wire bound runs out."""
        while True:
            while self.pending:
                yield self.pending.pop(0)
            data = await self._read()
            if not data:
                return
            self.budget.received(len(data))
            self.pending.extend(self.decoder.feed(data))

    async def _read(self) -> bytes:
        """The next bytes, waiting no longer than the budget allows (only this wait counts as idle time)."""
        budget = self.budget
        window = asyncio.timeout(budget.window())
        began = budget.clock()
        try:
            async with window:
                return await self.resp.content.readany()
        except TimeoutError:
            if window.expired():
                raise budget.timed_out() from None
            raise
        finally:
            budget.waited(budget.clock() - began)

    def chunk(self, event: SSEvent) -> StreamChunk:
        """A verified chunk, counted against the output bounds (it joins `deltas` even when it trips one, so the
        node's final output can still be checked against everything it sent)."""
        assert self.binding is not None
        chunk = verify_chunk(decode_event(event.data, MAX_CHUNK_EVENT_BYTES), self.binding, len(self.deltas))
        self.deltas.append(chunk.delta)
        self.budget.delta(chunk.delta)
        return chunk

    def done(self, event: SSEvent) -> Verified:
        assert self.binding is not None
        return verify_reply(event.data, self.binding, streamed_output="".join(self.deltas))

    def close(self) -> None:
        """Drop the connection (after a failure, or when the node must see a hang-up)."""
        self.resp.close()

    async def release(self) -> None:
        """After a clean end: read the body's tail so the keep-alive connection goes back to the pool."""
        try:
            async with asyncio.timeout(1.0):
                while await self.resp.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            self.resp.close()
            return
        self.resp.release()


async def open_node_stream(svc: RouterService, node: NodeState, binding: Binding, budget: StreamBudget) -> NodeStream:
    """Call the node's /infer/stream and wait for its first event: errors until then allow failover."""
    url, body = node.endpoint + "/infer/stream", binding.forwarded.to_json()
    resp = await svc.outbound.open_stream(url, body, target="node", client_timeout=svc.dispatcher.stream_timeout)
    # one event at most as large as a whole /infer reply: the final event carries the output
    stream = NodeStream(resp, SSEDecoder(MAX_NODE_REPLY_BYTES), budget)
    try:
        if resp.status != 200:
            body = await resp.content.read(64 * 1024)
            raise error_from_reply(resp.status, body, resp.headers.get("Retry-After"))
        async for event in stream.events():
            if event.event == "error":
                raise _error_event(event)
            stream.pending.insert(0, event)  # chunk or done: hand it to the relay
            return stream
        raise NodeFault("node stream ended before its first event")
    except (TimeoutError, aiohttp.ClientError, SSEError) as exc:
        stream.close()
        raise _transport_error(svc, exc) from None
    except BaseException:
        stream.close()
        raise


def _error_event(event: SSEvent) -> FedaiError:
    try:
        return FedaiError.from_dict(decode_json(event.data))
    except FedaiError:  # not JSON, or nested past the depth bound
        return NodeFault("node sent a malformed error event")


class Sink(Protocol):
    """How a stream is written for the caller: fedai's own SSE events, or OpenAI's chunk format."""

    def chunk(self, chunk: StreamChunk) -> bytes: ...

    def done(self, answer: Event, verified: Verified) -> bytes: ...

    def error(self, err: FedaiError) -> bytes: ...


class NativeSink:
    """fedai's stream: router-signed `chunk` events, the signed chain as `done`, typed `error`."""

    def __init__(self, svc: RouterService, origin: Origin) -> None:
        self.keys, self.origin = svc.keys, origin

    def chunk(self, chunk: StreamChunk) -> bytes:
        out = seal(self.keys, Kind.STREAM_CHUNK, chunk, to=self.origin.client, reply_to=self.origin.id)
        return format_sse("chunk", out.to_json())

    def done(self, answer: Event, verified: Verified) -> bytes:
        return format_sse("done", answer.to_json())

    def error(self, err: FedaiError) -> bytes:
        return format_sse("error", msgspec.json.encode(err.to_dict()))


async def open_stream(
    svc: RouterService, origin: Origin, payload: InferenceRequest, p: Plan, started: float
) -> NodeStream:
    """Open a node stream through the failover loop; the node stays in flight until the relay ends. The total
    duration counts from `started` (the request's arrival, monotonic clock) across attempts; idle time restarts
    with each attempt. Its metering is held to the plan's limits (a breach after the first chunk is the
    stream's typed error)."""
    stream_limits = svc.settings.stream_limits.for_request(payload.max_tokens)

    async def call(node: NodeState, binding: Binding) -> NodeStream:
        budget = StreamBudget(stream_limits, what="node stream", started=started)
        return await open_node_stream(svc, node, binding, budget)

    attempted = await svc.dispatcher.failover(origin, payload, p.candidates, call, limits=p.limits, hold=True)
    stream = attempted.result
    stream.node, stream.binding, stream.started, stream.attempt = (
        attempted.node, attempted.binding, attempted.started, attempted.attempt,
    )  # fmt: skip
    return stream


async def handle_infer_stream(svc: RouterService, request: Request) -> Response:
    try:
        body = await read_body(request, svc.settings.max_request_bytes)
        opened = svc.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
        client_event, payload = opened.event, opened.payload
        p = await plan(svc, client_event.pubkey, payload)
        await unless_served(svc, p.quote, lambda: svc.claim_locally(client_event))
    except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
        err = typed_failure(exc, "infer_stream")
        svc.metrics.requests.labels("infer_stream", err.code.value).inc()
        svc.metrics.errors.labels(err.code.value).inc()
        return error_response(err)
    origin = Origin(client_event.pubkey, client_event.id)
    svc.metrics.requests.labels("infer_stream", "ok").inc()
    return stream_response(svc, origin, payload, p, NativeSink(svc, origin), claim=client_event)


def stream_response(
    svc: RouterService,
    origin: Origin,
    payload: InferenceRequest,
    p: Plan,
    sink: Sink,
    *,
    claim: Event | None = None,
    on_answer: Callable[[Event], Awaitable[None]] | None = None,
) -> Response:
    """Answer at once with the stream's headers, then open the node stream (claiming `claim`'s id in Postgres
    meanwhile) and relay it. Everything that depends only on the request was checked before this point and got
    a plain HTTP error; what depends on the nodes (all failed before a first chunk, a replay caught by another
    replica) arrives as the stream's typed error event, and gives back the quote the request spent. Sending the
    headers while the node starts saves their round trip from the time to the first token."""

    async def body() -> AsyncIterator[bytes]:
        arrived, started = time.perf_counter(), time.monotonic()
        opening = partial(open_stream, svc, origin, payload, p, started)
        try:
            if claim is None:
                stream = await opening()
            else:
                stream = await while_claiming(svc, claim, opening, partial(_abandon, svc), local=False)
        except Exception as exc:  # noqa: BLE001 - the stream's typed error event, whatever failed
            err = typed_failure(exc, "infer_stream")
            await give_back(svc, p.quote)  # no node served it
            svc.metrics.errors.labels(err.code.value).inc()
            svc.metrics.streams.labels("error").inc()
            yield sink.error(err)
            return
        svc.metrics.ttft.observe(time.perf_counter() - arrived)
        async for data in relay(svc, origin, stream, sink, on_answer):
            yield data

    limits = svc.settings.stream_limits
    return RelayResponse(body(), deadline_s=limits.max_s + limits.idle_s)


async def _abandon(svc: RouterService, stream: NodeStream) -> None:
    """A stream opened for a request that turned out to be a replay: drop it (the node sees the hang-up)."""
    stream.close()
    if stream.node is not None:
        svc.registry.end(stream.node)


async def relay(
    svc: RouterService,
    origin: Origin,
    stream: NodeStream,
    sink: Sink,
    on_answer: Callable[[Event], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Verify each node event, write it for the caller, and finish with the stored, verified chain."""
    assert stream.node is not None and stream.binding is not None
    node = stream.node
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
                answer = await store_and_answer(svc, origin, stream, verified)
                if on_answer is not None:
                    await on_answer(answer)
                ending = "release"
                ttft = (first_chunk_at or time.perf_counter()) - stream.started
                await svc.dispatcher.finish(node, stream.started, latency_s=ttft)
                svc.metrics.streams.labels("done").inc()
                yield sink.done(answer, verified)
                return
            elif event.event == "error":
                raise _error_event(event)
        raise FedaiError(ErrorCode.UPSTREAM_ERROR, "node stream ended without a result")
    except StreamCapExceeded as capped:  # the node stays in flight until it is stopped and metered
        log.info("node stream bound reached", extra={"node": node.pubkey[:16], "cap": capped.cap})
        elapsed_ms = (time.perf_counter() - stream.started) * 1000
        await svc.dispatcher.penalise(origin, node, stream.attempt, capped, elapsed_ms)
        svc.metrics.streams.labels("capped").inc()
        yield sink.error(capped)
    except (FedaiError, TimeoutError, aiohttp.ClientError, SSEError) as exc:
        err = exc if isinstance(exc, FedaiError) else _transport_error(svc, exc)
        ending = "close"
        svc.registry.end(node)
        await svc.dispatcher.penalise(origin, node, stream.attempt, err, (time.perf_counter() - stream.started) * 1000)
        svc.metrics.streams.labels("error").inc()
        yield sink.error(err)
    finally:
        if ending == "release":
            await stream.release()
        elif ending == "close":
            stream.close()
        else:  # the caller went away mid-stream, or a bound tripped: stop the node, meter what it produced
            svc.spawn(_cancel_and_meter(svc, origin, stream), "stream cancel")


def _transport_error(svc: RouterService, exc: BaseException) -> FedaiError:
    """A node stream that broke or went silent: a generic error for the client, the detail logged and counted."""
    if isinstance(exc, SSEError):
        return FedaiError(ErrorCode.UPSTREAM_ERROR, "node stream broke")
    return svc.outbound.failure("node", exc)


async def store_and_answer(svc: RouterService, origin: Origin, stream: NodeStream, v: Verified) -> Event:
    """Store the verified metering, then sign the answer that carries the whole chain."""
    assert stream.node is not None and stream.binding is not None
    await svc.metering.record(
        MeteringEntry(record=v.record, event=v.metering, origin_id=origin.id, client=origin.client,
                      node=stream.node.pubkey, attempt=stream.attempt)
    )  # fmt: skip
    svc.metrics.metering_msat.inc(v.record.price_msat)
    svc.metrics.tokens.labels("in").inc(v.record.input_tokens)
    svc.metrics.tokens.labels("out").inc(v.record.output_tokens)
    result = InferResult(forwarded=stream.binding.forwarded, response=v.response, metering=v.metering,
                         node=stream.node.pubkey)  # fmt: skip
    return seal(svc.keys, Kind.INFER_RESPONSE, result, to=origin.client, reply_to=origin.id)


async def _cancel_and_meter(svc: RouterService, origin: Origin, stream: NodeStream) -> None:
    """After a client disconnect or a tripped bound: signed infer.cancel to the node, then drain its stream to the
    `done` with the metering of what it produced, and store that. The drain gets CANCEL_GRACE_S and doubled count
    bounds (what was already in flight); the node leaves our in-flight count when this ends."""
    assert stream.node is not None and stream.binding is not None
    node = stream.node
    capped = stream.budget.tripped
    stream.budget.grace(CANCEL_GRACE_S)
    try:
        async with asyncio.timeout(CANCEL_GRACE_S):
            cancel = seal(svc.keys, Kind.INFER_CANCEL, InferCancel(request=stream.binding.forwarded.id),
                          to=node.pubkey, nonce=True)  # fmt: skip
            url = node.endpoint + "/infer/cancel"
            reply = await svc.outbound.post_event(
                url, cancel, target="node", client_timeout=svc.dispatcher.timeout, limit=64 * 1024
            )
            if reply.status != 200:
                log.info("node refused the cancel", extra={"node": node.pubkey[:16], "status": reply.status})
            async for event in stream.events():
                if event.event == "chunk":
                    stream.chunk(event)
                elif event.event == "done":
                    await store_and_answer(svc, origin, stream, stream.done(event))
                    if not capped:  # a capped stream was counted as such already
                        svc.metrics.streams.labels("cancelled").inc()
                    return
                elif event.event == "error":
                    return
    except (FedaiError, TimeoutError, aiohttp.ClientError, SSEError) as exc:
        log.info("cancelled stream not metered", extra={"node": node.pubkey[:16], "error": type(exc).__name__})
    finally:
        stream.close()
        svc.registry.end(node)
