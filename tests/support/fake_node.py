"""A scriptable stand-in for a node, for router failure tests: it speaks the real protocol (signed events
over real HTTP) and can be told to misbehave. The real node service is tested in test_node_*.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    Ack,
    Capacity,
    InferCancel,
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    ModelInfo,
    NodeDescriptor,
    NodeReply,
    Pricing,
    StreamChunk,
    Usage,
    encode_payload,
    price_msat,
    prompt_sha256,
)
from fedai.service.http import error_response
from fedai.service.sse import format_sse

BEHAVIOURS = (
    "ok",
    "big",
    "slow",
    "bad_signature",
    "wrong_binding",
    "wrong_prompt_hash",
    "overcharge",
    "error_500",
    "busy",
)
# streaming misbehaviour (router stream bounds): keep-alive comments forever before or after a first chunk
# (cancel ignored), chunks forever (cancel honoured), `flood_bytes` of output at once, then waiting for the cancel
STREAM_BEHAVIOURS = ("keepalive_first", "keepalive_mid", "forever", "flood")
KEEPALIVE_S = 0.05


@dataclass
class FakeNode:
    model: str = "fake-model"
    behaviour: str = "ok"
    delay_s: float = 0.0
    input_msat: int = 1000
    output_msat: int = 2000
    capacity: int = 4
    keys: Keys = field(default_factory=Keys.generate)
    calls: int = 0
    endpoint: str = ""
    # (input, output) tokens the node claims in its response and metering, billed at its advertised rates:
    # consistent with itself, so only the router's bounds on what the client agreed to can catch it
    report_tokens: tuple[int, int] = (3, 3)

    def descriptor(self) -> NodeDescriptor:
        return NodeDescriptor(
            endpoint=self.endpoint,
            models=[
                ModelInfo(
                    id=self.model,
                    context_window=4096,
                    max_tokens=1024,
                    pricing=Pricing(input_msat=self.input_msat, output_msat=self.output_msat),
                )
            ],
            capacity=Capacity(max_concurrent=self.capacity),
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/infer", self._infer, methods=["POST"]),
                Route("/infer/stream", self._stream, methods=["POST"]),
                Route("/infer/cancel", self._cancel, methods=["POST"]),
            ]
        )

    # ---- streaming (scripted) ----------------------------------------------------------------------------

    words: tuple[str, ...] = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    word_delay_s: float = 0.05
    cancelled: set[str] = field(default_factory=set)
    streams_finished: int = 0
    flood_bytes: int = 0
    flood_delta: str = "x" * 1024
    forever_delta: str = " word"

    async def _stream(self, request: Request) -> Response:
        self.calls += 1
        body = await request.body()
        try:
            opened = open_envelope(body, InferenceRequest, kinds=(Kind.INFER_REQUEST,), recipient=self.keys.pubkey)
        except FedaiError as err:
            return error_response(err)
        if self.behaviour == "error_500":
            return error_response(FedaiError(ErrorCode.INTERNAL, "scripted failure"))
        return StreamingResponse(self._events(opened.event, opened.payload), media_type="text/event-stream")

    async def _events(self, forwarded: Event, req: InferenceRequest) -> AsyncIterator[bytes]:
        router = forwarded.pubkey
        if self.behaviour == "stream_error_first":
            yield format_sse("error", b'{"error":{"code":"upstream_error","message":"runner down"}}')
            return
        if self.behaviour in STREAM_BEHAVIOURS:
            async for data in self._misbehave(forwarded, req):
                yield data
            return
        produced: list[str] = []
        for seq, word in enumerate(self.words):
            if forwarded.id in self.cancelled:
                break
            if seq == 2 and self.behaviour == "stream_error_mid":
                yield format_sse("error", b'{"error":{"code":"upstream_error","message":"runner died"}}')
                return
            if seq == 2 and self.behaviour == "stream_die_mid":
                raise RuntimeError("scripted connection loss")
            delta = word if seq == 0 else " " + word
            chunk = seal(
                self.keys, Kind.STREAM_CHUNK, StreamChunk(seq=seq, delta=delta), to=router, reply_to=forwarded.id
            )
            if seq == 1 and self.behaviour == "bad_chunk":
                chunk = msgspec.structs.replace(chunk, sig="0" * 128)
            produced.append(delta)
            yield format_sse("chunk", chunk.to_json())
            await asyncio.sleep(self.word_delay_s)
        finish = "cancelled" if forwarded.id in self.cancelled else "stop"
        self.streams_finished += 1
        yield format_sse("done", encode_payload(self.reply(forwarded, req, "".join(produced), finish)))

    async def _misbehave(self, forwarded: Event, req: InferenceRequest) -> AsyncIterator[bytes]:
        produced: list[str] = []

        def chunk(delta: str) -> bytes:
            payload = StreamChunk(seq=len(produced), delta=delta)
            event = seal(self.keys, Kind.STREAM_CHUNK, payload, to=forwarded.pubkey, reply_to=forwarded.id)
            produced.append(delta)
            return format_sse("chunk", event.to_json())

        if self.behaviour == "keepalive_mid":
            yield chunk("alpha")
        if self.behaviour.startswith("keepalive"):
            while True:  # the router's cancel changes nothing
                yield b": ping\n\n"
                await asyncio.sleep(KEEPALIVE_S)
        if self.behaviour == "forever":
            while forwarded.id not in self.cancelled:
                yield chunk(self.forever_delta)
                await asyncio.sleep(self.word_delay_s)
        if self.behaviour == "flood":
            while len(produced) * len(self.flood_delta) < self.flood_bytes:
                yield chunk(self.flood_delta)
            for _ in range(100):  # then wait (silently) for the cancel
                if forwarded.id in self.cancelled:
                    break
                await asyncio.sleep(0.05)
        self.streams_finished += 1
        yield format_sse("done", encode_payload(self.reply(forwarded, req, "".join(produced), "cancelled")))

    async def _cancel(self, request: Request) -> Response:
        try:
            opened = open_envelope(
                await request.body(), InferCancel, kinds=(Kind.INFER_CANCEL,), recipient=self.keys.pubkey
            )
        except FedaiError as err:
            return error_response(err)
        self.cancelled.add(opened.payload.request)
        ack = seal(
            self.keys, Kind.ACK, Ack(status="ok", detail="cancelled"), to=opened.event.pubkey, reply_to=opened.event.id
        )
        return Response(ack.to_json(), media_type="application/json")

    async def _infer(self, request: Request) -> Response:
        self.calls += 1
        body = await request.body()
        try:
            opened = open_envelope(body, InferenceRequest, kinds=(Kind.INFER_REQUEST,), recipient=self.keys.pubkey)
        except FedaiError as err:
            return error_response(err)
        if self.behaviour == "error_500":
            return error_response(FedaiError(ErrorCode.INTERNAL, "scripted failure"))
        if self.behaviour == "busy":
            return error_response(FedaiError(ErrorCode.CAPACITY_EXCEEDED, "scripted busy", retry_after_ms=2000))
        if self.behaviour == "slow" or self.delay_s:
            await asyncio.sleep(self.delay_s or 5.0)
        reply = self.reply(opened.event, opened.payload)
        return Response(encode_payload(reply), media_type="application/json")

    def reply(
        self, forwarded: Event, req: InferenceRequest, output: str | None = None, finish_reason: str = "stop"
    ) -> NodeReply:
        router = forwarded.pubkey
        if output is None:
            output = f"fake answer {self.calls}" + (" padding" * 50_000 if self.behaviour == "big" else "")
        tokens_in, tokens_out = self.report_tokens
        usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
        answer = InferenceResponse(
            model=req.model, output=output, finish_reason=finish_reason, usage=usage, latency_ms=1.0
        )
        bound_to = "0" * 64 if self.behaviour == "wrong_binding" else forwarded.id
        response = seal(self.keys, Kind.INFER_RESPONSE, answer, to=router, reply_to=bound_to)
        pricing = Pricing(input_msat=self.input_msat, output_msat=self.output_msat)
        record = MeteringRecord(
            request=forwarded.id,
            response=response.id,
            model=req.model,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            wall_ms=1.0,
            bytes_in=0,
            bytes_out=0,
            prompt_sha256="f" * 64 if self.behaviour == "wrong_prompt_hash" else prompt_sha256(req),
            output_sha256=hashlib.sha256(output.encode()).hexdigest(),
            price_msat=price_msat(pricing, tokens_in, tokens_out) * (10 if self.behaviour == "overcharge" else 1),
        )
        metering = seal(self.keys, Kind.METERING_RECORD, record, to=router, reply_to=forwarded.id)
        if self.behaviour == "bad_signature":
            metering = msgspec.structs.replace(metering, sig="0" * 128)
        return NodeReply(response=response, metering=metering)


async def register(router_url: str, router_pubkey: str, keys: Keys, descriptor: NodeDescriptor) -> httpx.Response:
    """Send one signed heartbeat to the router, as a node does."""
    beat = seal(keys, Kind.NODE_HEARTBEAT, descriptor, to=router_pubkey, nonce=True)
    async with httpx.AsyncClient() as client:
        return await client.post(router_url + "/register-node", content=beat.to_json())
