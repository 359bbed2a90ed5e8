"""The router's checks of what a node signs for a forwarded request (`fedai_router.verify`), one lie at a time:
each reply here is hand-signed by a node key and differs from a genuine one in exactly one field."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    ModelInfo,
    NodeReply,
    Pricing,
    StreamChunk,
    Usage,
    encode_payload,
    price_msat,
    prompt_sha256,
)
from fedai_router.verify import (
    AboveAgreedPrice,
    Binding,
    NodeFault,
    ReplyLimits,
    input_token_bound,
    reply_limits,
    verify_chunk,
    verify_reply,
)

ROUTER, NODE, MALLORY = Keys.generate(), Keys.generate(), Keys.generate()
REQUEST = InferenceRequest(model="m", prompt="hello", max_tokens=8)
PRICING = Pricing(input_msat=1000, output_msat=2000)
MODEL = ModelInfo(id="m", context_window=4096, max_tokens=1024, pricing=PRICING)
OVERHEAD = 16
BOUND = len("hello") + OVERHEAD  # one token per prompt byte plus the template overhead
NO_CAP = reply_limits(REQUEST, None, tokens_per_byte=1, overhead=OVERHEAD)
OUTPUT = "the answer"


def forwarded() -> Event:
    payload = msgspec.structs.replace(REQUEST, client=MALLORY.pubkey, origin="a" * 64)
    return seal(ROUTER, Kind.INFER_REQUEST, payload, to=NODE.pubkey, nonce=True)


def binding(fwd: Event, limits: ReplyLimits = NO_CAP, model: ModelInfo | None = MODEL) -> Binding:
    return Binding(ROUTER.pubkey, NODE.pubkey, model, fwd, prompt_sha256(REQUEST), 60, limits)


def reply(
    fwd: Event,
    *,
    usage: tuple[int, int] = (3, 3),
    record: dict[str, Any] | None = None,
    model: str = "m",
    metering_tags: tuple[list[str], ...] = (),
    envelope: dict[str, Any] | None = None,
) -> bytes:
    """A node's `{response, metering}` for `fwd`, honest unless `record` overrides a metering field or `envelope`
    the metering event's own envelope (`keys`, `to`, `reply_to`, `created_at`)."""
    answer = InferenceResponse(
        model=model,
        output=OUTPUT,
        finish_reason="stop",
        usage=Usage(input_tokens=usage[0], output_tokens=usage[1]),
        latency_ms=1.0,
    )
    response = seal(NODE, Kind.INFER_RESPONSE, answer, to=ROUTER.pubkey, reply_to=fwd.id)
    fields: dict[str, Any] = {
        "request": fwd.id,
        "response": response.id,
        "model": model,
        "input_tokens": usage[0],
        "output_tokens": usage[1],
        "wall_ms": 1.0,
        "bytes_in": 5,
        "bytes_out": len(OUTPUT),
        "prompt_sha256": prompt_sha256(REQUEST),
        "output_sha256": hashlib.sha256(OUTPUT.encode()).hexdigest(),
        "price_msat": price_msat(PRICING, *usage),
    }
    fields.update(record or {})
    sealing: dict[str, Any] = {"keys": NODE, "to": ROUTER.pubkey, "reply_to": fwd.id, **(envelope or {})}
    metering = seal(
        sealing.pop("keys"), Kind.METERING_RECORD, MeteringRecord(**fields), extra_tags=metering_tags, **sealing
    )
    return encode_payload(NodeReply(response=response, metering=metering)).encode()


def test_a_genuine_reply_verifies() -> None:
    fwd = forwarded()
    verified = verify_reply(reply(fwd), binding(fwd))
    assert (verified.answer.output, verified.record.price_msat) == (OUTPUT, 9)


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"output_sha256": hashlib.sha256(b"another output").hexdigest()}, "output_sha256"),
        ({"input_tokens": 4, "price_msat": price_msat(PRICING, 4, 3)}, "usage"),  # metering disagrees with usage
        ({"output_tokens": 2, "price_msat": price_msat(PRICING, 3, 2)}, "usage"),
        ({"prompt_sha256": "f" * 64}, "prompt_sha256"),
        ({"request": "0" * 64}, "metering.request"),
        ({"response": "0" * 64}, "metering.response"),
        ({"price_msat": price_msat(PRICING, 3, 3) + 1}, "price above advertised"),
    ],
)
def test_each_lie_in_the_metering_is_refused(record: dict[str, Any], needle: str) -> None:
    fwd = forwarded()
    with pytest.raises(NodeFault, match=needle):
        verify_reply(reply(fwd, record=record), binding(fwd))


def test_a_model_other_than_the_advertised_one_is_refused() -> None:
    fwd = forwarded()
    with pytest.raises(NodeFault, match="model"):
        verify_reply(reply(fwd, model="other"), binding(fwd))


def test_streamed_text_must_equal_the_final_output() -> None:
    fwd = forwarded()
    assert verify_reply(reply(fwd), binding(fwd), streamed_output=OUTPUT).answer.output == OUTPUT
    with pytest.raises(NodeFault, match="output differs from the streamed deltas"):
        verify_reply(reply(fwd), binding(fwd), streamed_output="the ans")


def test_output_tokens_up_to_max_tokens_and_no_more() -> None:
    fwd = forwarded()
    assert verify_reply(reply(fwd, usage=(3, REQUEST.max_tokens)), binding(fwd)).record.output_tokens == 8
    with pytest.raises(NodeFault, match="output tokens above max_tokens"):
        verify_reply(reply(fwd, usage=(3, REQUEST.max_tokens + 1)), binding(fwd))


def test_input_tokens_up_to_the_prompt_bound_and_no_more() -> None:
    fwd = forwarded()
    assert verify_reply(reply(fwd, usage=(BOUND, 3)), binding(fwd)).record.input_tokens == BOUND
    with pytest.raises(NodeFault, match="input tokens above what the prompt can hold"):
        verify_reply(reply(fwd, usage=(BOUND + 1, 3)), binding(fwd))


def test_price_up_to_what_the_client_agreed_and_no_more() -> None:
    fwd = forwarded()
    price = price_msat(PRICING, 3, 3)
    at_cap = reply_limits(REQUEST, price, tokens_per_byte=1, overhead=OVERHEAD)
    assert verify_reply(reply(fwd), binding(fwd, at_cap)).record.price_msat == price
    below = reply_limits(REQUEST, price - 1, tokens_per_byte=1, overhead=OVERHEAD)
    with pytest.raises(AboveAgreedPrice, match="price above what the client agreed"):
        verify_reply(reply(fwd), binding(fwd, below))


def test_a_lie_above_the_cap_is_a_fault_not_only_an_over_price() -> None:
    """Over the cap alone is AboveAgreedPrice (not penalised); with any lie besides, a plain NodeFault."""
    fwd = forwarded()
    cap = reply_limits(REQUEST, 1, tokens_per_byte=1, overhead=OVERHEAD)
    with pytest.raises(NodeFault) as err:
        verify_reply(reply(fwd, usage=(3, REQUEST.max_tokens + 1)), binding(fwd, cap))
    assert not isinstance(err.value, AboveAgreedPrice) and "output tokens above max_tokens" in err.value.message


def test_a_zero_cap_means_zero() -> None:
    fwd = forwarded()
    zero = reply_limits(REQUEST, 0, tokens_per_byte=1, overhead=OVERHEAD)
    with pytest.raises(NodeFault, match="price above what the client agreed"):
        verify_reply(reply(fwd), binding(fwd, zero))
    free = ModelInfo(id="m", context_window=4096, max_tokens=1024, pricing=Pricing(input_msat=0, output_msat=0))
    assert verify_reply(reply(fwd, record={"price_msat": 0}), binding(fwd, zero, free)).record.price_msat == 0


def test_a_peer_node_without_advertised_prices_is_still_held_to_the_cap() -> None:
    """Offloaded chains: the provider's node pricing is unknown (model None), the client's cap still holds."""
    fwd = forwarded()
    cap = reply_limits(REQUEST, 5, tokens_per_byte=1, overhead=OVERHEAD)
    with pytest.raises(NodeFault, match="price above what the client agreed"):
        verify_reply(reply(fwd, record={"price_msat": 6}), binding(fwd, cap, model=None))


def test_token_counts_beyond_storage_are_refused_when_decoded() -> None:
    fwd = forwarded()
    huge = 2**31  # one above Postgres `integer`
    with pytest.raises(NodeFault, match="invalid_event"):
        verify_reply(reply(fwd, usage=(huge, 3)), binding(fwd, model=None))


@pytest.mark.parametrize("where", ["model", "tag"])
def test_a_nul_character_postgres_cannot_store_is_refused(where: str) -> None:
    fwd = forwarded()
    body = reply(fwd, model="m\x00") if where == "model" else reply(fwd, metering_tags=(["note", "a\x00b"],))
    with pytest.raises(NodeFault, match="NUL character"):
        verify_reply(body, binding(fwd, model=None))


def test_input_token_bound_is_linear_in_prompt_bytes() -> None:
    assert input_token_bound(0, 1, 1024) == 1024
    assert input_token_bound(100, 2, 10) == 210
    messages = InferenceRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4)  # type: ignore[list-item]
    limits = reply_limits(messages, None, tokens_per_byte=1, overhead=0)
    assert limits.max_input_tokens == len(b'[{"role":"user","content":"hi"}]')  # the JSON covers role markers


def chunk(fwd: Event, seq: int, signer: Keys = NODE, **envelope: Any) -> Event:
    sealing: dict[str, Any] = {"to": ROUTER.pubkey, "reply_to": fwd.id, **envelope}
    return seal(signer, Kind.STREAM_CHUNK, StreamChunk(seq=seq, delta="x"), **sealing)


def test_chunks_must_come_in_order() -> None:
    fwd = forwarded()
    assert verify_chunk(chunk(fwd, 0), binding(fwd), 0).seq == 0
    assert verify_chunk(chunk(fwd, 1), binding(fwd), 1).seq == 1
    with pytest.raises(NodeFault, match="out of sequence"):
        verify_chunk(chunk(fwd, 2), binding(fwd), 1)  # one skipped
    with pytest.raises(NodeFault, match="out of sequence"):
        verify_chunk(chunk(fwd, 0), binding(fwd), 1)  # one repeated


def test_a_chunk_signed_by_another_key_is_refused() -> None:
    fwd = forwarded()
    with pytest.raises(NodeFault, match="verification"):
        verify_chunk(chunk(fwd, 0, MALLORY), binding(fwd), 0)


# The envelope rules apply to the metering event and to each chunk as to the response: signed by the node,
# addressed to this router, bound (e tag) to the forwarded request, fresh. Each lie below is otherwise honest.
ENVELOPE_LIES = [
    pytest.param({"keys": MALLORY}, id="signed-by-another-key"),
    pytest.param({"to": MALLORY.pubkey}, id="addressed-elsewhere"),
    pytest.param({"reply_to": "0" * 64}, id="bound-to-another-request"),
    pytest.param({"created_at": 1_000_000}, id="stale"),
]


@pytest.mark.parametrize("envelope", ENVELOPE_LIES)
def test_the_metering_event_is_held_to_the_envelope_rules(envelope: dict[str, Any]) -> None:
    fwd = forwarded()
    with pytest.raises(NodeFault, match="verification"):
        verify_reply(reply(fwd, envelope=envelope), binding(fwd))


@pytest.mark.parametrize("envelope", ENVELOPE_LIES)
def test_each_chunk_is_held_to_the_envelope_rules(envelope: dict[str, Any]) -> None:
    fwd = forwarded()
    signer = envelope.pop("keys", NODE)
    with pytest.raises(NodeFault, match="verification"):
        verify_chunk(chunk(fwd, 0, signer, **envelope), binding(fwd), 0)
