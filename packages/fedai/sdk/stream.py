"""Streamed answers: each chunk checked as it arrives, the whole chain checked at the end.

A chunk must be a router-signed kind-21040 event addressed to the client, e-tagged to its request, in
sequence. The final `done` event is the same chain `/infer` returns, and the concatenated chunks must be
exactly the output the node signed and metered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec

from fedai.protocol.envelope import open_event
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import StreamChunk
from fedai.sdk.chain import ChainError, VerifiedChain, verify_chain
from fedai.service.sse import SSEDecoder, SSEvent

MAX_STREAM_EVENT_BYTES = 16 * 1024 * 1024
STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


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
                raise FedaiError.from_dict(msgspec.json.decode(event.data))
            except msgspec.DecodeError:
                raise FedaiError(ErrorCode.UPSTREAM_ERROR, "malformed error event") from None
        raise ChainError("stream", f"unexpected event {event.event!r}")

    def _chunk(self, data: bytes) -> str:
        if self.chain is not None:
            raise ChainError("stream", "chunk after the final event")
        try:
            chunk = open_event(
                decode_event(data, MAX_STREAM_EVENT_BYTES), StreamChunk, kinds=(Kind.STREAM_CHUNK,),
                recipient=self.request.pubkey, signers=(self.router,), reply_to=self.request.id, skew_s=None,
            ).payload  # fmt: skip
        except FedaiError as err:
            raise ChainError("stream chunk", f"{err.code.value}: {err.message}") from None
        if chunk.seq != len(self.deltas):
            raise ChainError("stream chunk", f"out of sequence: {chunk.seq}, expected {len(self.deltas)}")
        self.deltas.append(chunk.delta)
        return chunk.delta

    def _done(self, data: bytes) -> None:
        chain = verify_chain(self.request, decode_event(data, MAX_STREAM_EVENT_BYTES), self.router)
        if "".join(self.deltas) != chain.output:
            raise ChainError("stream", "the streamed chunks are not the output the node signed")
        self.chain = chain

    def finished(self) -> VerifiedChain:
        if self.chain is None:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, "stream ended without a result")
        return self.chain


def _raise_for_status(response: httpx.Response, body: bytes) -> None:
    if response.status_code != 200:
        try:
            document: Any = msgspec.json.decode(body)
        except msgspec.DecodeError:
            document = None
        raise FedaiError.from_dict(document, response.status_code)


class Stream:
    """Iterate for text deltas; `chain` holds the verified chain once the iteration ends."""

    def __init__(self, http: httpx.Client, url: str, request: Event, router: str) -> None:
        self._context = http.stream("POST", url, content=request.to_json(), headers=STREAM_HEADERS)
        self._verifier = StreamVerifier(request, router)
        self.request = request

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self._context.__exit__(None, None, None)

    def __iter__(self) -> Iterator[str]:
        try:
            response = self._context.__enter__()
        except httpx.HTTPError as exc:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"router unreachable: {type(exc).__name__}") from None
        _raise_for_status(response, response.read() if response.status_code != 200 else b"")
        decoder = SSEDecoder(MAX_STREAM_EVENT_BYTES)
        for data in response.iter_bytes():
            for event in decoder.feed(data):
                delta = self._verifier.handle(event)
                if delta is not None:
                    yield delta
        self._verifier.finished()

    @property
    def chain(self) -> VerifiedChain:
        return self._verifier.finished()


class AsyncStream:
    """`async for` text deltas; `chain` holds the verified chain once the iteration ends."""

    def __init__(self, http: httpx.AsyncClient, url: str, request: Event, router: str) -> None:
        self._context = http.stream("POST", url, content=request.to_json(), headers=STREAM_HEADERS)
        self._verifier = StreamVerifier(request, router)
        self.request = request

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._context.__aexit__(None, None, None)

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            response = await self._context.__aenter__()
        except httpx.HTTPError as exc:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"router unreachable: {type(exc).__name__}") from None
        _raise_for_status(response, await response.aread() if response.status_code != 200 else b"")
        decoder = SSEDecoder(MAX_STREAM_EVENT_BYTES)
        async for data in response.aiter_bytes():
            for event in decoder.feed(data):
                delta = self._verifier.handle(event)
                if delta is not None:
                    yield delta
        self._verifier.finished()

    @property
    def chain(self) -> VerifiedChain:
        return self._verifier.finished()
