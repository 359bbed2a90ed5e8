# Long but one concept: the payload schemas of fedai.protocol.messages, their bounds and encodings.
"""fedai.protocol.messages: payload schemas, compact encoding, prompt hashing and pricing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import (
    Ack,
    Capacity,
    ChatMessage,
    InferenceRequest,
    InferenceResponse,
    InferResult,
    MeteringRecord,
    ModelInfo,
    NodeDescriptor,
    NodeReply,
    Pricing,
    QuoteRequest,
    QuoteResponse,
    Usage,
    decode_payload,
    encode_payload,
    estimate_tokens,
    price_msat,
    prompt_material,
    prompt_sha256,
    to_builtins,
)

H64 = "ab" * 32


def _expect_invalid(content: str | bytes, cls: type[Any]) -> FedaiError:
    with pytest.raises(FedaiError) as info:
        decode_payload(content, cls)
    assert info.value.code is ErrorCode.INVALID_EVENT
    assert info.value.status == 400
    return info.value


def _req(**fields: Any) -> str:
    base: dict[str, Any] = {"model": "m", "max_tokens": 16}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


# --- InferenceRequest -----------------------------------------------------------------------------------


def test_inference_request_prompt_form() -> None:
    req = decode_payload(_req(prompt="hi"), InferenceRequest)
    assert req.prompt == "hi"
    assert req.messages is None
    assert req.max_tokens == 16
    assert req.stream is False


def test_inference_request_messages_form() -> None:
    req = decode_payload(_req(messages=[{"role": "user", "content": "hi"}]), InferenceRequest)
    assert req.prompt is None
    assert req.messages == [ChatMessage(role="user", content="hi")]


@pytest.mark.parametrize(
    "fields",
    [
        {},  # neither
        {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},  # both
        {"messages": []},  # empty conversation
        {"prompt": None, "messages": None},
    ],
)
def test_inference_request_exactly_one_of_prompt_or_messages(fields: dict[str, Any]) -> None:
    err = _expect_invalid(_req(**fields), InferenceRequest)
    assert "InferenceRequest" in err.message


def test_inference_request_constructor_enforces_the_same_rule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        InferenceRequest(model="m", max_tokens=1)
    with pytest.raises(ValueError, match="exactly one"):
        InferenceRequest(model="m", max_tokens=1, prompt="a", messages=[ChatMessage(role="user", content="b")])
    with pytest.raises(ValueError, match="must not be empty"):
        InferenceRequest(model="m", max_tokens=1, messages=[])


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (1_000_000, True), (1_000_001, False), (-5, False)])
def test_max_tokens_bounds(value: int, ok: bool) -> None:
    content = _req(prompt="x", max_tokens=value)
    if ok:
        assert decode_payload(content, InferenceRequest).max_tokens == value
    else:
        assert "max_tokens" in _expect_invalid(content, InferenceRequest).message


def test_max_tokens_required_and_integer() -> None:
    _expect_invalid(json.dumps({"model": "m", "prompt": "x"}), InferenceRequest)
    _expect_invalid(_req(prompt="x", max_tokens=1.5), InferenceRequest)
    _expect_invalid(_req(prompt="x", max_tokens="16"), InferenceRequest)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("temperature", 0, True),
        ("temperature", 0.7, True),
        ("temperature", 2, True),
        ("temperature", 2.0001, False),
        ("temperature", -0.1, False),
        ("top_p", 0, False),  # exclusive lower bound
        ("top_p", 0.0001, True),
        ("top_p", 1, True),
        ("top_p", 1.01, False),
        ("top_p", -1, False),
    ],
)
def test_sampling_bounds(field: str, value: float, ok: bool) -> None:
    content = _req(prompt="x", **{field: value})
    if ok:
        assert getattr(decode_payload(content, InferenceRequest), field) == value
    else:
        assert field in _expect_invalid(content, InferenceRequest).message


@pytest.mark.parametrize(
    "fields",
    [
        {"model": ""},
        {"model": "m" * 201},
        {"model": 5},
        {"stream": "yes"},
        {"stop": "END"},
        {"max_price_msat": -1},
        {"client": "AB" * 32},
        {"origin": "ab"},
        {"messages": [{"role": "", "content": "x"}], "prompt": ...},
        {"messages": [{"role": "user"}], "prompt": ...},
    ],
)
def test_inference_request_schema_failures(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"prompt": "x"}
    base.update(fields)
    _expect_invalid(_req(**base), InferenceRequest)


def test_unknown_fields_are_ignored() -> None:
    content = _req(prompt="x", future_field={"nested": [1, 2]}, another=7)
    req = decode_payload(content, InferenceRequest)
    assert req.prompt == "x"
    assert "future_field" not in encode_payload(req)
    resp = decode_payload(
        json.dumps(
            {
                "model": "m",
                "output": "o",
                "finish_reason": "stop",
                "usage": {"input_tokens": 1, "output_tokens": 2, "cached_tokens": 9},
                "latency_ms": 3.5,
                "extra": True,
            }
        ),
        InferenceResponse,
    )
    assert resp.usage == Usage(input_tokens=1, output_tokens=2)


def test_omit_defaults_gives_compact_content() -> None:
    req = InferenceRequest(model="m", prompt="hi", max_tokens=8)
    assert encode_payload(req) == '{"model":"m","prompt":"hi","max_tokens":8}'
    full = InferenceRequest(model="m", prompt="hi", max_tokens=8, temperature=0.5, stream=True, client=H64)
    encoded = encode_payload(full)
    assert " " not in encoded
    assert json.loads(encoded) == {
        "model": "m",
        "prompt": "hi",
        "max_tokens": 8,
        "temperature": 0.5,
        "stream": True,
        "client": H64,
    }
    assert encode_payload(Ack()) == "{}"
    assert decode_payload(encode_payload(full), InferenceRequest) == full


def test_encode_is_utf8_not_escaped() -> None:
    req = InferenceRequest(model="m", prompt="é😀\n", max_tokens=1)
    assert encode_payload(req) == '{"model":"m","prompt":"é😀\\n","max_tokens":1}'
    assert to_builtins(req) == {"model": "m", "prompt": "é😀\n", "max_tokens": 1}


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "{",
        "[]",
        "null",
        '"a string"',
        b'{"model":"\xff"}',  # invalid UTF-8
        '{"model":"\ud800"}',  # lone surrogate in a str
    ],
)
def test_decode_payload_errors_are_invalid_event(content: str | bytes) -> None:
    _expect_invalid(content, InferenceRequest)


@pytest.mark.parametrize("content", ["", "not json", "{", "[]", "null", "1", '"x"'])
def test_decode_payload_errors_for_a_payload_without_required_fields(content: str) -> None:
    _expect_invalid(content, Ack)
    assert decode_payload("{}", Ack) == Ack(status="ok", detail="")


def test_decode_payload_non_object_for_every_payload_type() -> None:
    for cls in (InferenceRequest, InferenceResponse, MeteringRecord, NodeDescriptor, QuoteRequest, Ack):
        err = _expect_invalid("[1]", cls)
        assert cls.__name__ in err.message


# --- prompt hashing -------------------------------------------------------------------------------------


def test_prompt_sha256_of_prompt_is_utf8_bytes() -> None:
    req = InferenceRequest(model="m", prompt="héllo", max_tokens=1)
    assert prompt_material(req) == "héllo".encode()
    assert prompt_sha256(req) == hashlib.sha256("héllo".encode()).hexdigest()


def test_prompt_sha256_of_messages_is_compact_json() -> None:
    msgs = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="é")]
    req = InferenceRequest(model="m", messages=msgs, max_tokens=1)
    expected = b'[{"role":"system","content":"be brief"},{"role":"user","content":"\xc3\xa9"}]'
    assert prompt_material(req) == expected
    assert prompt_sha256(req) == hashlib.sha256(expected).hexdigest()


def test_prompt_sha256_distinguishes_prompt_from_messages() -> None:
    as_prompt = InferenceRequest(model="m", prompt="hi", max_tokens=1)
    as_messages = InferenceRequest(model="m", messages=[ChatMessage(role="user", content="hi")], max_tokens=1)
    assert prompt_sha256(as_prompt) != prompt_sha256(as_messages)
    # independent of other fields
    other = InferenceRequest(model="other", prompt="hi", max_tokens=99, temperature=1.0)
    assert prompt_sha256(other) == prompt_sha256(as_prompt)


def test_prompt_sha256_survives_the_wire() -> None:
    req = InferenceRequest(model="m", messages=[ChatMessage(role="user", content="x\u2028y")], max_tokens=1)
    again = decode_payload(encode_payload(req), InferenceRequest)
    assert prompt_sha256(again) == prompt_sha256(req)


def test_prompt_material_of_quote_request() -> None:
    assert prompt_material(QuoteRequest(model="m", prompt="ab", max_tokens=1)) == b"ab"
    assert prompt_material(QuoteRequest(model="m", input_tokens=5, max_tokens=1)) == b""


# --- pricing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_msat", "output_msat", "tin", "tout", "expected"),
    [
        (1000, 1000, 1, 1, 2),  # 1 msat a token each way
        (1000, 2000, 10, 5, 20),
        (1, 1, 1, 0, 1),  # 0.001 msat rounds up to 1
        (1, 1, 1000, 0, 1),  # exactly 1
        (1, 1, 1001, 0, 2),  # 1.001 rounds up to 2
        (0, 0, 123, 456, 0),  # free
        (500, 1500, 0, 0, 0),  # no tokens
        (3, 7, 333, 0, 1),  # 0.999 -> 1
        (250, 750, 4, 4, 4),  # 1 + 3 exactly
        (999, 0, 1, 0, 1),
    ],
)
def test_price_msat_rounds_up(input_msat: int, output_msat: int, tin: int, tout: int, expected: int) -> None:
    assert price_msat(Pricing(input_msat=input_msat, output_msat=output_msat), tin, tout) == expected


def test_price_msat_is_exact_for_large_values() -> None:
    # 10**17 + 1 msat-thousandths: exact ceiling is 10**14 + 1 (float division would lose the +1)
    pricing = Pricing(input_msat=10**17 + 1, output_msat=0)
    assert price_msat(pricing, 1, 0) == 10**14 + 1
    big = Pricing(input_msat=2**64 - 1, output_msat=2**64 - 1)
    numerator = 1_000_000 * (2**64 - 1) * 2
    assert price_msat(big, 1_000_000, 1_000_000) == -(-numerator // 1000)


def test_price_msat_is_pure() -> None:
    pricing = Pricing(input_msat=1234, output_msat=5678)
    assert price_msat(pricing, 100, 200) == price_msat(pricing, 100, 200) == 1259  # exactly 1259.000
    assert price_msat(pricing, 100, 201) == 1265  # 1264.678 rounds up
    assert pricing == Pricing(input_msat=1234, output_msat=5678)


@pytest.mark.parametrize(("nbytes", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (4001, 1001)])
def test_estimate_tokens(nbytes: int, tokens: int) -> None:
    assert estimate_tokens(nbytes) == tokens


# --- NodeDescriptor / QuoteRequest / others -------------------------------------------------------------


def _descriptor_json() -> str:
    return json.dumps(
        {
            "endpoint": "http://127.0.0.1:9000",
            "models": [
                {"id": "a", "context_window": 4096, "max_tokens": 512, "pricing": {"input_msat": 1, "output_msat": 2}},
                {
                    "id": "b",
                    "context_window": 8192,
                    "max_tokens": 1024,
                    "pricing": {"unit": "msat_per_1k_tokens", "input_msat": 3, "output_msat": 4},
                    "job_types": ["text-generation", "embedding"],
                    "latency_estimate_ms": 12.5,
                },
            ],
            "capacity": {"max_concurrent": 2},
            "region": "eu",
        }
    )


def test_node_descriptor_model_lookup() -> None:
    desc = decode_payload(_descriptor_json(), NodeDescriptor)
    a = desc.model("a")
    b = desc.model("b")
    assert a is not None
    assert a.max_tokens == 512
    assert a.job_types == ["text-generation"]
    assert a.pricing.unit == "msat_per_1k_tokens"
    assert b is not None
    assert b.pricing.input_msat == 3
    assert b.job_types == ["text-generation", "embedding"]
    assert desc.model("c") is None
    assert desc.model("") is None
    assert desc.capacity == Capacity(max_concurrent=2, in_flight=0)
    assert desc.software_version == ""


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(models=[]),
        lambda d: d.update(endpoint=""),
        lambda d: d["capacity"].update(max_concurrent=0),
        lambda d: d["models"][0].update(context_window=0),
        lambda d: d["models"][0]["pricing"].update(input_msat=-1),
        lambda d: d["models"][0].pop("pricing"),
    ],
)
def test_node_descriptor_schema_failures(mutate: Any) -> None:
    d = json.loads(_descriptor_json())
    mutate(d)
    _expect_invalid(json.dumps(d), NodeDescriptor)


@pytest.mark.parametrize(
    "fields",
    [{"prompt": "x"}, {"messages": [{"role": "user", "content": "x"}]}, {"input_tokens": 0}, {"input_tokens": 7}],
)
def test_quote_request_accepts_any_one_source(fields: dict[str, Any]) -> None:
    q = decode_payload(json.dumps({"model": "m", "max_tokens": 4, **fields}), QuoteRequest)
    assert q.model == "m"


def test_quote_request_needs_a_source() -> None:
    err = _expect_invalid(json.dumps({"model": "m", "max_tokens": 4}), QuoteRequest)
    assert "input_tokens" in err.message
    with pytest.raises(ValueError, match="one of"):
        QuoteRequest(model="m", max_tokens=4)
    _expect_invalid(json.dumps({"model": "m", "max_tokens": 4, "input_tokens": -1}), QuoteRequest)


def test_metering_record_round_trip_and_hash_patterns() -> None:
    rec = MeteringRecord(
        request=H64,
        model="m",
        input_tokens=1,
        output_tokens=2,
        wall_ms=3.0,
        bytes_in=4,
        bytes_out=5,
        prompt_sha256=hashlib.sha256(b"x").hexdigest(),
        price_msat=6,
    )
    encoded = encode_payload(rec)
    assert "response" not in encoded
    assert "output_sha256" not in encoded
    assert decode_payload(encoded, MeteringRecord) == rec
    d = json.loads(encoded)
    d["prompt_sha256"] = d["prompt_sha256"].upper()
    _expect_invalid(json.dumps(d), MeteringRecord)


def test_quote_response_round_trip() -> None:
    from fedai.protocol.messages import PriceBreakdown

    q = QuoteResponse(
        quote_id="q1",
        model="m",
        node=H64,
        input_tokens=1,
        max_output_tokens=2,
        price=PriceBreakdown(input_msat=1, output_msat=2, router_fee_msat=0, total_msat=3),
        expires_at=1700000000,
    )
    assert decode_payload(encode_payload(q), QuoteResponse) == q


def test_nested_events_in_payloads_are_validated() -> None:
    keys = Keys.generate()
    ev = sign_event(keys, 21034, "x", created_at=7)
    reply = NodeReply(response=ev, metering=ev)
    back = decode_payload(encode_payload(reply), NodeReply)
    assert back.response == ev
    result = InferResult(forwarded=ev, response=ev, metering=ev, node=keys.pubkey)
    assert decode_payload(encode_payload(result), InferResult) == result
    bad = json.loads(encode_payload(reply))
    bad["response"]["id"] = bad["response"]["id"].upper()
    _expect_invalid(json.dumps(bad), NodeReply)


def test_model_info_defaults() -> None:
    info = ModelInfo(id="x", context_window=1, max_tokens=1, pricing=Pricing(input_msat=0, output_msat=0))
    assert info.job_types == ["text-generation"]
    assert info.latency_estimate_ms == 0.0
    assert info.pricing.unit == "msat_per_1k_tokens"
    # a second instance gets its own list
    other = ModelInfo(id="y", context_window=1, max_tokens=1, pricing=Pricing(input_msat=0, output_msat=0))
    other.job_types.append("embedding")
    assert info.job_types == ["text-generation"]
    encoded = msgspec.to_builtins(info)
    assert "latency_estimate_ms" not in encoded
    assert encoded["pricing"] == {"input_msat": 0, "output_msat": 0}
    assert decode_payload(encode_payload(info), ModelInfo) == info
