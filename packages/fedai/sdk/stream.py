"""Streamed answers: each chunk checked as it arrives, the whole chain checked at the end.

A chunk must be a router-signed kind-21040 event addressed to the client, e-tagged to its request, in
sequence. The final `done` event is the same chain `/infer` returns, and the concatenated chunks must be
exactly the output the node signed and metered.

Every stream is bounded (`StreamLimits`, set with the clients' `stream_limits`): total duration, time waiting for
the router's next delta, output bytes, chunks and bytes read. The defaults sit above a default router's own
bounds, so a router's typed error event normally arrives first; a bound tripped here raises
`StreamLimitExceeded` (`upstream_timeout` for time, `upstream_error` for size) and closes the connection.
Everything else raised while streaming is the same as for a unary call (`fedai.sdk.errors`): a `RouterError`
for the router's error event, a `ChainError` for a chunk or final event that does not verify, a
`TransportError` when the connection fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import NoReturn

import httpx
import msgspec

from fedai.observability.tracing import inject
from fedai.protocol.envelope import open_event
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import StreamChunk
from fedai.sdk.chain import VerifiedChain, verify_chain
from fedai.sdk.errors import (
    ChainError,
    FedaiClientError,
    Link,
    StreamLimitExceeded,
    TransportError,
    UnexpectedResponse,
    error_from_body,
    error_from_response,
    transport_error,
)
from fedai.service.sse import SSEDecoder, SSEError, SSEvent
from fedai.service.stream_limits import StreamBudget, StreamCapExceeded, StreamLimits

MAX_STREAM_EVENT_BYTES = 16 * 1024 * 1024
STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
# above the router's defaults (600 s, 60 s, 1 MiB, 32768 chunks): the router's own typed error comes first
DEFAULT_STREAM_LIMITS = StreamLimits(max_s=660.0, idle_s=90.0, max_output_bytes=2 * 1024 * 1024, max_chunks=65_536)


class StreamVerifier:
    def __init__(self, request: Event, router: str) -> None:
        self.request = request
        self.router = router
        self.deltas: list[str] = []
        self.chain: VerifiedChain | None = None

    def handle(self, event: SSEvent) -> str | None:
        """A delta for a chunk, None for the final event; raises for errors and anything that does not verify."""
        if event.event == "chunk":
            return self._chunk(event.data)
        if event.event == "done":
            self._done(event.data)
            return None
        if event.event == "error":
            try:
                body = msgspec.json.decode(event.data)
            except msgspec.DecodeError:
                raise UnexpectedResponse("malformed error event") from None
            raise error_from_body(body)
        raise ChainError(Link.STREAM, f"unexpected event {event.event!r}")

    def _chunk(self, data: bytes) -> str:
        if self.chain is not None:
            raise ChainError(Link.STREAM, "chunk after the final event")
        try:
            chunk = open_event(
                decode_event(data, MAX_STREAM_EVENT_BYTES),
                StreamChunk,
                kinds=(Kind.STREAM_CHUNK,),
                recipient=self.request.pubkey,
                signers=(self.router,),
                reply_to=self.request.id,
                skew_s=None,
            ).payload
        except FedaiError as err:
            raise ChainError.wrap(Link.STREAM_CHUNK, err) from None
        if chunk.seq != len(self.deltas):
            raise ChainError(Link.STREAM_CHUNK, f"out of sequence: {chunk.seq}, expected {len(self.deltas)}")
        self.deltas.append(chunk.delta)
        return chunk.delta

    def _done(self, data: bytes) -> None:
        try:
            answer = decode_event(data, MAX_STREAM_EVENT_BYTES)
        except FedaiError as err:
            raise ChainError.wrap(Link.ROUTER_ANSWER, err) from None
        chain = verify_chain(self.request, answer, self.router)
        if "".join(self.deltas) != chain.output:
            raise ChainError(Link.STREAM_OUTPUT, "the streamed chunks are not the output the node signed")
        self.chain = chain

    def finished(self) -> VerifiedChain:
        if self.chain is None:
            raise UnexpectedResponse("stream ended without a result")
        return self.chain


def _read_timeout(http: httpx.Client | httpx.AsyncClient, limits: StreamLimits) -> httpx.Timeout:
    """The client's timeouts, but no read may wait longer than the stream's idle bound."""
    t = http.timeout
    return httpx.Timeout(
        connect=t.connect, read=min(t.read or limits.idle_s, limits.idle_s), write=t.write, pool=t.pool
    )


def _stream_limits(request: Event, limits: StreamLimits) -> StreamLimits:
    try:
        max_tokens = msgspec.json.decode(request.content).get("max_tokens")
    except (msgspec.DecodeError, AttributeError):
        max_tokens = None
    return limits.for_request(max_tokens) if isinstance(max_tokens, int) else limits


def _broken(exc: Exception, budget: StreamBudget, read_is_idle_bound: bool) -> FedaiClientError:
    """A failure while reading the router's stream, as a typed error."""
    if isinstance(exc, FedaiClientError):
        return exc
    if isinstance(exc, StreamCapExceeded):
        return StreamLimitExceeded.of(exc)
    if isinstance(exc, TimeoutError) or (isinstance(exc, httpx.ReadTimeout) and read_is_idle_bound):
        return StreamLimitExceeded.of(budget.timed_out())  # the stream's own time bound ran out
    if isinstance(exc, httpx.HTTPError):
        return transport_error(exc, streaming=True)
    if isinstance(exc, SSEError):
        return UnexpectedResponse("router sent malformed Server-Sent Events")
    raise TypeError(f"not a stream failure: {type(exc).__name__}") from exc


def _raise_broken(exc: Exception, budget: StreamBudget, read_is_idle_bound: bool) -> NoReturn:
    err = _broken(exc, budget, read_is_idle_bound)
    raise err from (exc if isinstance(err, TransportError) else None)


class _Reader:
    """What both stream flavours do with the bytes they read: decode, verify, count against the bounds."""

    def __init__(self, request: Event, router: str, limits: StreamLimits) -> None:
        self.verifier = StreamVerifier(request, router)
        self.budget = StreamBudget(_stream_limits(request, limits), what="router stream")
        self.decoder = SSEDecoder(MAX_STREAM_EVENT_BYTES)

    def deltas(self, data: bytes) -> list[str]:
        self.budget.received(len(data))
        found = []
        for event in self.decoder.feed(data):
            delta = self.verifier.handle(event)
            if delta is not None:
                self.budget.delta(delta)
                found.append(delta)
        return found


class Stream:
    """Iterate for text deltas; `chain` holds the verified chain once the iteration ends."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        request: Event,
        router: str,
        limits: StreamLimits = DEFAULT_STREAM_LIMITS,
        *,
        explain: Callable[[FedaiClientError], None] | None = None,
    ) -> None:
        """`explain` may raise a more precise error for the router's refusal (the client's check of its pin)."""
        self._explain = explain
        timeout = _read_timeout(http, limits)
        self._context = http.stream(
            "POST", url, content=request.to_json(), headers=inject(STREAM_HEADERS), timeout=timeout
        )
        self._idle_read = timeout.read == limits.idle_s  # a read timeout is then the stream's idle bound
        self._reader = _Reader(request, router, limits)
        self._verifier = self._reader.verifier
        self.request = request

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self._context.__exit__(None, None, None)

    def _open(self) -> httpx.Response:
        try:
            response = self._context.__enter__()
            if response.status_code != 200:
                refused = error_from_response(response.status_code, response.read())
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            if self._explain is not None:
                self._explain(refused)
            raise refused
        return response

    def __iter__(self) -> Iterator[str]:
        response = self._open()
        reader, budget = self._reader, self._reader.budget
        chunks = response.iter_bytes()
        while True:
            began = budget.clock()
            try:
                budget.check_time()
                data = next(chunks, b"")
                budget.waited(budget.clock() - began)
                found = reader.deltas(data) if data else []
            except (FedaiClientError, StreamCapExceeded, httpx.HTTPError, SSEError) as exc:
                budget.waited(budget.clock() - began)
                response.close()
                _raise_broken(exc, budget, self._idle_read)
            if not data:
                break
            yield from found
        self._verifier.finished()

    @property
    def chain(self) -> VerifiedChain:
        return self._verifier.finished()


class AsyncStream:
    """`async for` text deltas; `chain` holds the verified chain once the iteration ends."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        request: Event,
        router: str,
        limits: StreamLimits = DEFAULT_STREAM_LIMITS,
        *,
        explain: Callable[[FedaiClientError], Awaitable[None]] | None = None,
    ) -> None:
        self._explain = explain
        timeout = _read_timeout(http, limits)
        self._context = http.stream(
            "POST", url, content=request.to_json(), headers=inject(STREAM_HEADERS), timeout=timeout
        )
        self._idle_read = timeout.read == limits.idle_s  # a read timeout is then the stream's idle bound
        self._reader = _Reader(request, router, limits)
        self._verifier = self._reader.verifier
        self.request = request

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._context.__aexit__(None, None, None)

    async def _open(self) -> httpx.Response:
        try:
            response = await self._context.__aenter__()
            if response.status_code != 200:
                refused = error_from_response(response.status_code, await response.aread())
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            if self._explain is not None:
                await self._explain(refused)
            raise refused
        return response

    async def __aiter__(self) -> AsyncIterator[str]:
        response = await self._open()
        reader, budget = self._reader, self._reader.budget
        chunks = response.aiter_bytes()
        while True:
            began = budget.clock()
            try:
                window = asyncio.timeout(budget.window())
                async with window:
                    data = await anext(chunks, b"")
                budget.waited(budget.clock() - began)
                found = reader.deltas(data) if data else []
            except (FedaiClientError, StreamCapExceeded, TimeoutError, httpx.HTTPError, SSEError) as exc:
                budget.waited(budget.clock() - began)
                await response.aclose()
                _raise_broken(exc, budget, self._idle_read)
            if not data:
                break
            for delta in found:
                yield delta
        self._verifier.finished()

    @property
    def chain(self) -> VerifiedChain:
        return self._verifier.finished()
