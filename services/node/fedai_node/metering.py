"""The metering record a node signs for every request it served: counts and hashes, never content."""

from __future__ import annotations

import hashlib

from fedai.protocol.event import Event
from fedai.protocol.messages import InferenceRequest, MeteringRecord, Pricing, price_msat, prompt_sha256
from fedai_node.runners.base import RunnerResult


def build_record(
    *,
    request: Event,
    req: InferenceRequest,
    response: Event,
    result: RunnerResult,
    pricing: Pricing,
    wall_ms: float,
    bytes_in: int,
) -> MeteringRecord:
    """`request` is the router's infer.request, `response` the node's infer.response that carried the output."""
    return MeteringRecord(
        request=request.id,
        response=response.id,
        model=req.model,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        wall_ms=round(wall_ms, 3),
        bytes_in=bytes_in,
        bytes_out=len(response.to_json()),
        prompt_sha256=prompt_sha256(req),
        output_sha256=hashlib.sha256(result.output.encode()).hexdigest(),
        price_msat=price_msat(pricing, result.input_tokens, result.output_tokens),
    )
