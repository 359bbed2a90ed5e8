"""Every integer in the payload schemas is bounded by what storage holds: the largest value decodes, one more
is a typed `invalid_event` at decode time (never a failed database write after a node did the work)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.federation import Bid, Receipt, Rfb, RouterLimits, RouterStatus
from fedai.protocol.messages import (
    INT4_MAX,
    INT8_MAX,
    MAX_RATE_MSAT,
    MAX_UNIX_MS,
    Capacity,
    MeteringRecord,
    ModelInfo,
    Payload,
    Pricing,
    QuoteRequest,
    QuoteResponse,
    StreamChunk,
    Usage,
    decode_payload,
    price_msat,
)
from fedai_router.pricing import MAX_FEE_BASE_MSAT, quote_price

H = "ab" * 32

METERING: dict[str, Any] = {
    "request": H,
    "model": "m",
    "input_tokens": 1,
    "output_tokens": 1,
    "wall_ms": 1.0,
    "bytes_in": 1,
    "bytes_out": 1,
    "prompt_sha256": H,
    "price_msat": 1,
}
USAGE = {"input_tokens": 1, "output_tokens": 1}
PRICING = {"input_msat": 1, "output_msat": 1}
MODEL = {"id": "m", "context_window": 1, "max_tokens": 1, "pricing": PRICING}
QUOTE_RESPONSE = {
    "quote_id": "q",
    "model": "m",
    "node": H,
    "input_tokens": 1,
    "max_output_tokens": 1,
    "price": {"input_msat": 1, "output_msat": 1, "router_fee_msat": 1, "total_msat": 1},
    "expires_at": 1,
}
RFB = {
    "job_type": "t",
    "model": "m",
    "privacy": 0,
    "input_tokens": 1,
    "max_tokens": 1,
    "max_price_msat": 1,
    "job_hash": H,
    "deadline_ms": 1,
}
BID = {"rfb": H, "price_msat": 1, "eta_ms": 1, "capacity_token": "c" * 32}
RECEIPT = {
    "job_id": "c" * 32,
    "job_submit": H,
    "requester": H,
    "provider": H,
    "input_sha256": H,
    "output_sha256": H,
    "usage": USAGE,
    "price_msat": 1,
    "status": "ok",
    "started_ms": 1,
    "finished_ms": 1,
}
STATUS = {"backpressure": "NORMAL", "queue_depth": 1, "active_jobs": 1, "p95_latency_ms": 1.0, "nodes": 1}

# (payload class, a valid document, the path of one integer field in it, the largest value storage holds)
CASES: list[tuple[type[Payload], dict[str, Any], tuple[str, ...], int]] = [
    (MeteringRecord, METERING, ("input_tokens",), INT4_MAX),  # metering_records.input_tokens integer
    (MeteringRecord, METERING, ("output_tokens",), INT4_MAX),
    (MeteringRecord, METERING, ("bytes_in",), INT8_MAX),  # bigint
    (MeteringRecord, METERING, ("bytes_out",), INT8_MAX),
    (MeteringRecord, METERING, ("price_msat",), INT8_MAX),
    (Usage, USAGE, ("input_tokens",), INT4_MAX),
    (Pricing, PRICING, ("input_msat",), MAX_RATE_MSAT),
    (Pricing, PRICING, ("output_msat",), MAX_RATE_MSAT),
    (ModelInfo, MODEL, ("context_window",), INT4_MAX),
    (ModelInfo, MODEL, ("max_tokens",), INT4_MAX),
    (Capacity, {"max_concurrent": 1}, ("max_concurrent",), INT4_MAX),
    (Capacity, {"max_concurrent": 1, "in_flight": 1}, ("in_flight",), INT4_MAX),
    (QuoteRequest, {"model": "m", "input_tokens": 1, "max_tokens": 1}, ("input_tokens",), INT4_MAX),  # quotes
    (QuoteResponse, QUOTE_RESPONSE, ("price", "total_msat"), INT8_MAX),
    (QuoteResponse, QUOTE_RESPONSE, ("expires_at",), 2**53),
    (StreamChunk, {"seq": 1, "delta": ""}, ("seq",), INT4_MAX),
    (Rfb, RFB, ("input_tokens",), INT4_MAX),
    (Rfb, RFB, ("max_tokens",), 1_000_000),  # as InferenceRequest.max_tokens (the job it binds)
    (Rfb, RFB, ("max_price_msat",), INT8_MAX),  # federation_jobs.price_msat bigint
    (Rfb, RFB, ("deadline_ms",), MAX_UNIX_MS),
    (Bid, BID, ("eta_ms",), MAX_UNIX_MS),
    (Bid, BID, ("price_msat",), INT8_MAX),
    (Receipt, RECEIPT, ("started_ms",), MAX_UNIX_MS),
    (Receipt, RECEIPT, ("usage", "output_tokens"), INT4_MAX),
    (RouterStatus, STATUS, ("queue_depth",), INT4_MAX),
    (RouterLimits, {"max_tokens": 1, "max_request_bytes": 1}, ("max_request_bytes",), INT4_MAX),
]


def _with(document: dict[str, Any], path: tuple[str, ...], value: object) -> bytes:
    doc = msgspec.json.decode(msgspec.json.encode(document))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return msgspec.json.encode(doc)


@pytest.mark.parametrize(("cls", "document", "path", "largest"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_the_largest_storable_value_decodes_and_one_more_is_invalid_event(
    cls: type[Payload], document: dict[str, Any], path: tuple[str, ...], largest: int
) -> None:
    decoded = msgspec.to_builtins(decode_payload(_with(document, path, largest), cls))
    for key in path:
        decoded = decoded[key]
    assert decoded == largest
    with pytest.raises(FedaiError) as err:
        decode_payload(_with(document, path, largest + 1), cls)
    assert err.value.code == ErrorCode.INVALID_EVENT
    assert path[-1] in err.value.message


@pytest.mark.parametrize("tokens", [-(2**64), -1, 0, 1, INT4_MAX - 1, INT4_MAX, INT4_MAX + 1, 2**63, 2**64, 10**30])
def test_a_metered_token_count_decodes_exactly_when_an_integer_column_holds_it(tokens: int) -> None:
    body = _with(METERING, ("input_tokens",), tokens)
    if 0 <= tokens <= INT4_MAX:
        assert decode_payload(body, MeteringRecord).input_tokens == tokens
    else:
        with pytest.raises(FedaiError) as err:
            decode_payload(body, MeteringRecord)
        assert err.value.code == ErrorCode.INVALID_EVENT


def test_the_largest_price_and_quote_fit_bigint() -> None:
    """Bounded rates and token counts keep every computed price storable (`quotes`, `metering_records`)."""
    top = Pricing(input_msat=MAX_RATE_MSAT, output_msat=MAX_RATE_MSAT)
    assert price_msat(top, INT4_MAX, INT4_MAX) <= INT8_MAX
    quote = quote_price(top, INT4_MAX, INT4_MAX, fee_base_msat=MAX_FEE_BASE_MSAT, fee_ppm=1_000_000)
    assert quote.total_msat <= INT8_MAX
    assert quote.input_msat == -(-INT4_MAX * MAX_RATE_MSAT // 1000)  # exact: no float rounding
