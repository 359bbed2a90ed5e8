"""The node's metering record: bound to request and response, hashes only, priced by the node's pricing."""

from __future__ import annotations

import hashlib

from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    Pricing,
    Usage,
    encode_payload,
    prompt_sha256,
)
from fedai_node.metering import build_record
from fedai_node.runners.base import RunnerResult

ROUTER = Keys.generate()
NODE = Keys.generate()


def test_record_fields_and_price() -> None:
    req = InferenceRequest(model="fedai-mock-1", prompt="secret prompt text", max_tokens=32)
    request = seal(ROUTER, Kind.INFER_REQUEST, req, to=NODE.pubkey, nonce=True)
    result = RunnerResult(output="alpha bravo", finish_reason="stop", input_tokens=1234, output_tokens=567)
    answer = InferenceResponse(
        model=req.model,
        output=result.output,
        finish_reason="stop",
        usage=Usage(input_tokens=1234, output_tokens=567),
        latency_ms=1.0,
    )
    response = seal(NODE, Kind.INFER_RESPONSE, answer, to=ROUTER.pubkey, reply_to=request.id)
    pricing = Pricing(input_msat=1000, output_msat=2000)
    record = build_record(
        request=request, req=req, response=response, result=result, pricing=pricing, wall_ms=12.34567, bytes_in=999
    )
    assert record.request == request.id
    assert record.response == response.id
    assert record.model == "fedai-mock-1"
    assert (record.input_tokens, record.output_tokens) == (1234, 567)
    assert record.wall_ms == 12.346
    assert record.bytes_in == 999
    assert record.bytes_out == len(response.to_json())
    assert record.prompt_sha256 == prompt_sha256(req) == hashlib.sha256(b"secret prompt text").hexdigest()
    assert record.output_sha256 == hashlib.sha256(b"alpha bravo").hexdigest()
    # ceil((1234*1000 + 567*2000) / 1000) = ceil(2368) = 2368
    assert record.price_msat == 2368
    assert isinstance(record, MeteringRecord)
    assert "secret prompt text" not in encode_payload(record)


def test_price_rounds_up_to_whole_msat() -> None:
    req = InferenceRequest(model="m", prompt="p", max_tokens=1)
    request = seal(ROUTER, Kind.INFER_REQUEST, req, to=NODE.pubkey, nonce=True)
    response = seal(NODE, Kind.INFER_RESPONSE, "{}", reply_to=request.id)
    result = RunnerResult(output="", finish_reason="stop", input_tokens=1, output_tokens=1)
    record = build_record(
        request=request,
        req=req,
        response=response,
        result=result,
        pricing=Pricing(input_msat=1, output_msat=1),
        wall_ms=0.0,
        bytes_in=1,
    )
    assert record.price_msat == 1  # 2/1000 msat rounds up, never down to free
