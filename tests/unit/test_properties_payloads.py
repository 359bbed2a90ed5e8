"""Properties of every payload schema (`fedai.protocol.messages` and `fedai.protocol.federation`, found by
reflection so new payloads are covered without editing this file): `decode_payload` yields an instance or an
`invalid_event` error for any input, and schema-valid payloads round-trip through `encode_payload`."""

from __future__ import annotations

from typing import Any

import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import Payload, decode_payload, encode_payload
from tests.support.strategies import any_text, attempt, dumps, field_names, json_values, payload_classes, schema_json

CLASSES = payload_classes()
# 35 classes: keep the file fast. Fields are drawn one by one, so most drawn InferenceRequests (and the payloads
# that nest one: SealedJob) break its prompt-XOR-messages rule and are skipped by `assume`, the simplest (first)
# draws most of all; the skipped ones are not failures, and every kept one is checked in full.
PER_CLASS = settings(
    max_examples=max(25, settings().max_examples // 4),
    suppress_health_check=[*settings().suppress_health_check, HealthCheck.filter_too_much],
)
INT64_MAX = 2**63 - 1


def decode_or_none(content: bytes | str, cls: type[Payload]) -> Payload | None:
    """The decoded payload, or None when refused; any refusal must be `invalid_event`."""
    payload, code = attempt(decode_payload, content, cls)
    assert code is ErrorCode.INVALID_EVENT if payload is None else isinstance(payload, cls), f"{cls.__name__}: {code}"
    return payload  # type: ignore[no-any-return]


def test_reflection_finds_the_payloads_the_protocol_uses() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"InferenceRequest", "MeteringRecord", "NodeDescriptor", "Rfb", "Bid", "Award", "JobSubmit"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@PER_CLASS
@given(raw=st.binary(max_size=200) | any_text)
def test_arbitrary_input_is_a_payload_or_invalid_event(cls: type[Payload], raw: bytes | str) -> None:
    decode_or_none(raw, cls)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@PER_CLASS
@given(data=st.data())
def test_schema_valid_payloads_round_trip(cls: type[Payload], data: st.DataObject) -> None:
    obj = data.draw(schema_json(cls), label="payload")
    payload = decode_or_none(dumps(obj), cls)
    assume(payload is not None)  # a cross-field rule (`__post_init__`) refused it
    encoded = encode_payload(payload)  # type: ignore[arg-type]
    again = decode_payload(encoded, cls)
    assert again == payload
    assert encode_payload(again) == encoded
    assert decode_payload(encoded.encode(), cls) == payload  # bytes and str decode alike


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@PER_CLASS
@given(data=st.data())
def test_any_field_replaced_by_any_json_is_a_payload_or_invalid_event(cls: type[Payload], data: st.DataObject) -> None:
    obj = data.draw(schema_json(cls), label="payload")
    name = data.draw(st.sampled_from(field_names(cls)), label="field")
    value = data.draw(json_values | st.integers(min_value=2**63 - 2, max_value=2**80), label="value")
    payload = decode_or_none(dumps({**obj, name: value}), cls)
    if payload is not None:
        assert encode_payload(payload)  # whatever was accepted can be re-encoded


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@PER_CLASS
@given(value=json_values)
def test_arbitrary_json_is_a_payload_or_invalid_event(cls: type[Payload], value: Any) -> None:
    decode_or_none(dumps(value), cls)


def _unbounded_ints(t: mi.Type, path: str) -> list[str]:
    if isinstance(t, mi.IntType):
        top = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
        return [path] if top is None or top > INT64_MAX else []
    if isinstance(t, mi.UnionType):
        return [p for u in t.types for p in _unbounded_ints(u, path)]
    if isinstance(t, mi.ListType):
        return _unbounded_ints(t.item_type, path + "[]")
    if isinstance(t, mi.StructType):
        return [p for f in t.fields for p in _unbounded_ints(f.type, f"{path}.{f.encode_name}")]
    return []


def test_every_integer_field_has_an_upper_bound_storage_can_hold() -> None:
    unbounded = sorted({p for cls in CLASSES for p in _unbounded_ints(mi.type_info(cls), cls.__name__)})
    assert unbounded == [], f"{len(unbounded)} unbounded integer fields: {unbounded}"


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if c.__name__ in {"InferenceRequest", "Rfb", "Bid"}], ids=lambda c: c.__name__
)
def test_deeply_nested_unknown_field_is_invalid_event(cls: type[Payload]) -> None:
    depth = 100_000
    body = '{"extension":' + "[" * depth + "]" * depth + "}"
    with pytest.raises(FedaiError) as info:
        decode_payload(body, cls)
    assert info.value.code is ErrorCode.INVALID_EVENT
