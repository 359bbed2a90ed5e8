"""What the router checks in everything a node signs for a forwarded request. Pure: raises `NodeFault`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from fedai.protocol.envelope import open_event
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.jsonguard import too_deep
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    ModelInfo,
    NodeReply,
    StreamChunk,
    price_msat,
    prompt_material,
)

_decode_reply = msgspec.json.Decoder(NodeReply).decode


class NodeFault(FedaiError):
    """A protocol violation by the node: retry elsewhere (before the first byte) and quarantine the node."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UPSTREAM_ERROR, message)


class AboveAgreedPrice(NodeFault):
    """A reply otherwise correct whose price is above what the client agreed to. Refused and retried elsewhere
    like any fault, but the node is not penalised: an honest node can bill more than the router's prompt-size
    estimate (a chat template's tokens), so a client choosing a tight cap must not be able to quarantine it."""


@dataclass(frozen=True, slots=True)
class Verified:
    response: Event
    metering: Event
    record: MeteringRecord
    answer: InferenceResponse


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """What the client agreed to: a node's metering above any of these is refused (docs/security.md#metering)."""

    max_input_tokens: int  # a generous bound from the prompt's size (`input_token_bound`)
    max_output_tokens: int  # the request's max_tokens
    max_price_msat: int | None  # the client's max_price_msat and its quote, whichever is lower (None: no cap)


def input_token_bound(prompt_bytes: int, tokens_per_byte: int, overhead: int) -> int:
    """The most input tokens a node may meter for a prompt of `prompt_bytes` (the UTF-8 prompt, or the compact
    JSON of `messages`, whose keys and quotes already cover each message's role markers). A byte-level tokenizer
    makes at most one token per byte; `overhead` covers a chat template's fixed text (BOS, a default system
    prompt). Pure."""
    return prompt_bytes * tokens_per_byte + overhead


def reply_limits(
    request: InferenceRequest, max_price_msat: int | None, *, tokens_per_byte: int, overhead: int
) -> ReplyLimits:
    """The limits a node's reply to `request` is held to, under the price cap the client agreed to. Pure."""
    bound = input_token_bound(len(prompt_material(request)), tokens_per_byte, overhead)
    return ReplyLimits(max_input_tokens=bound, max_output_tokens=request.max_tokens, max_price_msat=max_price_msat)


@dataclass(frozen=True, slots=True)
class Binding:
    """Who must have signed what, for one forwarded request, and what its metering may not exceed."""

    router: str
    node: str
    model: ModelInfo | None  # the node's advertised model (None: a peer's node, whose prices we never saw)
    forwarded: Event
    prompt_sha256: str
    skew_s: int
    limits: ReplyLimits


def _over_limits(record: MeteringRecord, limits: ReplyLimits) -> list[str]:
    problems = []
    if record.input_tokens > limits.max_input_tokens:
        problems.append("input tokens above what the prompt can hold")
    if record.output_tokens > limits.max_output_tokens:
        problems.append("output tokens above max_tokens")
    return problems


def _disagreements(
    record: MeteringRecord, answer: InferenceResponse, response_id: str, b: Binding, streamed_output: str | None
) -> list[str]:
    """Where a node's metering disagrees with its response, the request we sent, the advertised price or (for a
    stream) the deltas we relayed. Pure."""
    problems = []
    if record.request != b.forwarded.id:
        problems.append("metering.request")
    if record.response != response_id:
        problems.append("metering.response")
    if record.prompt_sha256 != b.prompt_sha256:
        problems.append("prompt_sha256")
    if record.output_sha256 != hashlib.sha256(answer.output.encode()).hexdigest():
        problems.append("output_sha256")
    if (record.input_tokens, record.output_tokens) != (answer.usage.input_tokens, answer.usage.output_tokens):
        problems.append("usage")
    if record.model != answer.model or (b.model is not None and answer.model != b.model.id):
        problems.append("model")
    if b.model is not None and record.price_msat > price_msat(
        b.model.pricing, record.input_tokens, record.output_tokens
    ):
        problems.append("price above advertised")
    if streamed_output is not None and answer.output != streamed_output:
        problems.append("output differs from the streamed deltas")
    return problems


def verify_reply(body: bytes, b: Binding, *, streamed_output: str | None = None) -> Verified:
    """A node's `{response, metering}`: signed by the node, addressed to us, bound to the forwarded request,
    agreeing with each other, with the prompt we sent, with the advertised price, within what the client agreed
    to (`ReplyLimits`), and (for a stream) with the deltas we relayed."""
    try:
        if too_deep(body):
            raise msgspec.DecodeError("nested too deep")
        reply = _decode_reply(body)
    except msgspec.DecodeError:
        raise NodeFault("node reply is not a {response, metering} pair of events") from None
    rules = {"recipient": b.router, "signers": (b.node,), "reply_to": b.forwarded.id, "skew_s": b.skew_s}
    try:
        resp = open_event(reply.response, InferenceResponse, kinds=(Kind.INFER_RESPONSE,), **rules)  # type: ignore[arg-type]
        meter = open_event(reply.metering, MeteringRecord, kinds=(Kind.METERING_RECORD,), **rules)  # type: ignore[arg-type]
    except FedaiError as err:
        raise NodeFault(f"node reply failed verification: {err.code.value}: {err.message}") from None
    record, answer = meter.payload, resp.payload
    problems = _disagreements(record, answer, resp.event.id, b, streamed_output) + _over_limits(record, b.limits)
    if problems:
        raise NodeFault("node metering does not match its response: " + ", ".join(problems))
    cap = b.limits.max_price_msat
    if cap is not None and record.price_msat > cap:
        raise AboveAgreedPrice(f"node metering: price above what the client agreed ({record.price_msat} > {cap} msat)")
    return Verified(resp.event, meter.event, record, answer)


def verify_chunk(event: Event, b: Binding, expected_seq: int) -> StreamChunk:
    """One streamed chunk: node-signed, addressed to us, bound to the forwarded request, in sequence."""
    try:
        chunk = open_event(
            event,
            StreamChunk,
            kinds=(Kind.STREAM_CHUNK,),
            recipient=b.router,
            signers=(b.node,),
            reply_to=b.forwarded.id,
            skew_s=b.skew_s,
        ).payload
    except FedaiError as err:
        raise NodeFault(f"node chunk failed verification: {err.code.value}: {err.message}") from None
    if chunk.seq != expected_seq:
        raise NodeFault(f"node chunk out of sequence: got {chunk.seq}, expected {expected_seq}")
    return chunk
