"""The client's chain verification: a genuine chain passes; each tampered link is caught and named."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    InferResult,
    MeteringRecord,
    Usage,
    decode_payload,
    prompt_sha256,
)
from fedai.sdk.chain import ChainError, verify_chain

CLIENT, ROUTER, NODE, MALLORY = (Keys.generate() for _ in range(4))
REQUEST = InferenceRequest(model="m", prompt="what is 2+2?", max_tokens=16)


def build(
    *,
    output: str = "4",
    metering_overrides: dict[str, object] | None = None,
    node_keys: Keys = NODE,
    router_keys: Keys = ROUTER,
    request: Event | None = None,
    forward: Callable[[InferenceRequest], InferenceRequest] | None = None,
) -> tuple[Event, Event]:
    """A client request (CLIENT asking REQUEST, unless `request` is given) and the router's answer to it;
    `forward` changes what the router forwards (a paid request's `forwarded_payment`)."""
    asked = REQUEST if request is None else decode_payload(request.content, InferenceRequest)
    request = request or seal(CLIENT, Kind.INFER_REQUEST, REQUEST, to=ROUTER.pubkey, nonce=True)
    payload = msgspec.structs.replace(asked, client=CLIENT.pubkey, origin=request.id)
    payload = forward(payload) if forward is not None else payload
    forwarded = seal(router_keys, Kind.INFER_REQUEST, payload, to=NODE.pubkey, nonce=True)
    usage = Usage(input_tokens=4, output_tokens=1)
    answer = InferenceResponse(model="m", output=output, finish_reason="stop", usage=usage, latency_ms=2.0)
    response = seal(node_keys, Kind.INFER_RESPONSE, answer, to=ROUTER.pubkey, reply_to=forwarded.id)
    fields: dict[str, object] = {
        "request": forwarded.id,
        "response": response.id,
        "model": "m",
        "input_tokens": 4,
        "output_tokens": 1,
        "wall_ms": 2.0,
        "bytes_in": 10,
        "bytes_out": 10,
        "prompt_sha256": prompt_sha256(asked),
        "output_sha256": hashlib.sha256(output.encode()).hexdigest(),
        "price_msat": 1,
    }
    fields.update(metering_overrides or {})
    record = MeteringRecord(**fields)  # type: ignore[arg-type]
    metering = seal(node_keys, Kind.METERING_RECORD, record, to=ROUTER.pubkey, reply_to=forwarded.id)
    result = InferResult(forwarded=forwarded, response=response, metering=metering, node=NODE.pubkey)
    return request, seal(router_keys, Kind.INFER_RESPONSE, result, to=CLIENT.pubkey, reply_to=request.id)


def test_genuine_chain_verifies() -> None:
    request, answer = build()
    chain = verify_chain(request, answer, ROUTER.pubkey)
    assert (chain.output, chain.node, chain.router) == ("4", NODE.pubkey, ROUTER.pubkey)
    assert chain.summary()["events"]["metering"] == chain.metering.id


def _fails(step: str, request: Event, answer: Event, router: str = ROUTER.pubkey) -> None:
    with pytest.raises(ChainError) as err:
        verify_chain(request, answer, router)
    assert err.value.step == step
    assert err.value.code == "invalid_event"


def test_answer_from_another_router_key() -> None:
    _fails("router answer", *build(), router=MALLORY.pubkey)


def test_answer_for_another_request() -> None:
    _, answer = build()
    other, _ = build()
    _fails("router answer", other, answer)


def test_router_rewrote_the_prompt() -> None:
    request = seal(CLIENT, Kind.INFER_REQUEST, REQUEST, to=ROUTER.pubkey, nonce=True)
    changed = msgspec.structs.replace(REQUEST, prompt="something else", client=CLIENT.pubkey, origin=request.id)
    _fails("forwarded request", request, answer_with_request(request, changed))


def answer_with_request(request: Event, forwarded_payload: InferenceRequest) -> Event:
    forwarded = seal(ROUTER, Kind.INFER_REQUEST, forwarded_payload, to=NODE.pubkey, nonce=True)
    _, template = build()
    inner = msgspec.json.decode(template.content, type=InferResult)
    result = InferResult(forwarded=forwarded, response=inner.response, metering=inner.metering, node=NODE.pubkey)
    return seal(ROUTER, Kind.INFER_RESPONSE, result, to=CLIENT.pubkey, reply_to=request.id)


def test_forwarded_request_not_pointing_at_client() -> None:
    request = seal(CLIENT, Kind.INFER_REQUEST, REQUEST, to=ROUTER.pubkey, nonce=True)
    payload = msgspec.structs.replace(REQUEST, client=MALLORY.pubkey, origin=request.id)
    _fails("forwarded request", request, answer_with_request(request, payload))


def test_response_signed_by_someone_else() -> None:
    request, answer = build(node_keys=MALLORY)
    _fails("node response", request, answer)


def test_metering_for_another_prompt() -> None:
    _fails("metering", *build(metering_overrides={"prompt_sha256": "0" * 64}))


def test_metering_with_other_usage() -> None:
    _fails("metering", *build(metering_overrides={"output_tokens": 99}))


def test_metering_with_wrong_output_hash() -> None:
    _fails("metering", *build(metering_overrides={"output_sha256": "1" * 64}))


def test_metering_not_bound_to_response() -> None:
    _fails("metering", *build(metering_overrides={"response": "2" * 64}))


def test_tampered_inner_event_signature() -> None:
    request, answer = build()
    inner = msgspec.json.decode(answer.content, type=InferResult)
    forged = msgspec.structs.replace(inner.response, content=inner.response.content.replace('"4"', '"5"'))
    result = msgspec.structs.replace(inner, response=forged)
    resealed = seal(ROUTER, Kind.INFER_RESPONSE, result, to=CLIENT.pubkey, reply_to=request.id)
    _fails("node response", request, resealed)
