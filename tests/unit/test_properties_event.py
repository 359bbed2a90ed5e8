"""Properties of NIP-01 event parsing (`decode_event`, `event_from_obj`, `verify_event`): any input yields an event
or a `FedaiError` with the expected code, never another exception; valid events round-trip byte for byte and
agree with nostr-sdk; no mutation of a signed event is accepted as anything but the original."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import nostr_sdk as ns
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import (
    DEFAULT_MAX_EVENT_BYTES,
    Event,
    compute_id,
    decode_event,
    event_from_obj,
    sign_event,
    verify_event,
)
from fedai.protocol.keys import Keys
from tests.support.strategies import (
    any_text,
    attempt,
    byte_mutations,
    dumps,
    event_dict,
    event_like,
    json_values,
    utf8_text,
)

KEYS = [Keys(bytes([i]) * 32) for i in (1, 2, 3)]
PARSE_CODES = {ErrorCode.INVALID_JSON, ErrorCode.INVALID_EVENT, ErrorCode.TOO_LARGE}
VERIFY_CODES = {ErrorCode.INVALID_EVENT, ErrorCode.INVALID_SIGNATURE}

tags = st.lists(st.lists(utf8_text, min_size=1, max_size=4), max_size=4)
signed_events = st.builds(
    sign_event,
    keys=st.sampled_from(KEYS),
    kind=st.integers(min_value=0, max_value=65535),
    content=utf8_text,
    tags=tags,
    created_at=st.integers(min_value=0, max_value=2**53),
)


def parse_and_verify(raw: bytes | str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    event = decode_event(raw, max_bytes)
    verify_event(event)
    return event


def expect_codes(codes: set[ErrorCode], fn: Any, *args: Any) -> Any:
    """Call `fn`; if it raises, the error must be a `FedaiError` with one of `codes` (anything else propagates)."""
    result, code = attempt(fn, *args)
    assert code is None or code in codes, f"unexpected code {code}"
    return result


# --- arbitrary input ----------------------------------------------------------------------------------------


@given(raw=st.binary(max_size=300), max_bytes=st.sampled_from([0, 16, 200, DEFAULT_MAX_EVENT_BYTES]))
@example(raw=b"\xff\xfe", max_bytes=DEFAULT_MAX_EVENT_BYTES)
@example(raw=b'{"id":"\xed\xa0\x80"}', max_bytes=DEFAULT_MAX_EVENT_BYTES)  # UTF-8 encoded surrogate
def test_arbitrary_bytes_give_an_event_or_a_parse_error(raw: bytes, max_bytes: int) -> None:
    event = expect_codes(PARSE_CODES, decode_event, raw, max_bytes)
    if len(raw) > max_bytes:
        assert event is None
    if event is not None:
        expect_codes(VERIFY_CODES, verify_event, event)


@given(raw=any_text, max_bytes=st.sampled_from([0, 16, DEFAULT_MAX_EVENT_BYTES]))
@example(raw="\ud800", max_bytes=DEFAULT_MAX_EVENT_BYTES)
@example(raw='{"content":"\udfff"}', max_bytes=DEFAULT_MAX_EVENT_BYTES)
@example(raw="é" * 9, max_bytes=16)  # 9 characters, 18 bytes: the limit is in bytes
def test_arbitrary_text_gives_an_event_or_a_parse_error(raw: str, max_bytes: int) -> None:
    event = expect_codes(PARSE_CODES, decode_event, raw, max_bytes)
    if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        assert event is None
    if event is not None:
        expect_codes(VERIFY_CODES, verify_event, event)


@given(value=json_values)
@example(value={"created_at": 2**64})
@example(value={"kind": 1.5})
@example(value=[0, "a", 1])
def test_valid_json_that_is_not_an_event_is_invalid_event_never_invalid_json(value: Any) -> None:
    with pytest.raises(FedaiError) as info:
        decode_event(dumps(value))
    assert info.value.code is ErrorCode.INVALID_EVENT


@given(obj=event_like, data=st.data())
@example(obj={"id": 1, "pubkey": "x"}, data=None)  # a schema error comes before the syntax error
def test_a_truncated_object_is_invalid_json_even_after_a_schema_error(obj: dict[str, Any], data: Any) -> None:
    raw = dumps(obj)
    cut = len(raw) - 1 if data is None else data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(FedaiError) as info:
        decode_event(raw[:cut])
    assert info.value.code is ErrorCode.INVALID_JSON


@given(obj=event_like)
@example(obj={"created_at": -1})
@example(obj={"kind": 65536})
@example(obj={"tags": [[1]]})
def test_event_shaped_objects_parse_the_same_from_bytes_and_from_objects(obj: dict[str, Any]) -> None:
    from_bytes = expect_codes({ErrorCode.INVALID_EVENT}, decode_event, dumps(obj))
    from_obj = expect_codes({ErrorCode.INVALID_EVENT}, event_from_obj, obj)
    assert from_bytes == from_obj
    if from_bytes is not None:  # well-formed by chance: random hex never verifies
        with pytest.raises(FedaiError) as info:
            verify_event(from_bytes)
        assert info.value.code in VERIFY_CODES


# --- valid events -------------------------------------------------------------------------------------------


@given(event=signed_events)
def test_signed_events_round_trip_byte_for_byte(event: Event) -> None:
    raw = event.to_json()
    decoded = parse_and_verify(raw, max_bytes=len(raw))
    assert decoded == event
    assert decoded.to_json() == raw
    assert event_from_obj(msgspec.json.decode(raw)) == event


@given(event=signed_events)
def test_nostr_sdk_accepts_what_we_sign_with_the_same_id(event: Event) -> None:
    theirs = ns.Event.from_json(event.to_json().decode())
    assert theirs.verify()
    assert theirs.id().to_hex() == event.id


@given(event=signed_events, data=st.data())
def test_no_byte_mutation_is_accepted_as_a_different_event(event: Event, data: st.DataObject) -> None:
    raw = event.to_json()
    mutated = data.draw(byte_mutations(raw), label="mutated")
    accepted = expect_codes(PARSE_CODES | VERIFY_CODES, parse_and_verify, mutated)
    assert accepted is None or accepted == event


Mutate = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
FIELD_CHANGES: dict[str, tuple[Mutate, ErrorCode]] = {
    "id": (lambda d, v: {**d, "id": v["id"]}, ErrorCode.INVALID_EVENT),
    "pubkey": (lambda d, v: {**d, "pubkey": v["pubkey"]}, ErrorCode.INVALID_EVENT),
    "created_at": (lambda d, v: {**d, "created_at": v["created_at"]}, ErrorCode.INVALID_EVENT),
    "kind": (lambda d, v: {**d, "kind": v["kind"]}, ErrorCode.INVALID_EVENT),
    "tags": (lambda d, v: {**d, "tags": v["tags"]}, ErrorCode.INVALID_EVENT),
    "content": (lambda d, v: {**d, "content": v["content"]}, ErrorCode.INVALID_EVENT),
    "sig": (lambda d, v: {**d, "sig": v["sig"]}, ErrorCode.INVALID_SIGNATURE),
    # an attacker who recomputes the id after changing a field still lacks the signer's key
    "content+id": (lambda d, v: _reid({**d, "content": v["content"]}), ErrorCode.INVALID_SIGNATURE),
    "pubkey+id": (lambda d, v: _reid({**d, "pubkey": v["pubkey"]}), ErrorCode.INVALID_SIGNATURE),
    "tags+id": (lambda d, v: _reid({**d, "tags": v["tags"]}), ErrorCode.INVALID_SIGNATURE),
}


def _reid(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "id": compute_id(d["pubkey"], d["created_at"], d["kind"], d["tags"], d["content"]).hex()}


@given(event=signed_events, other=signed_events, change=st.sampled_from(sorted(FIELD_CHANGES)))
def test_a_changed_field_is_refused_with_its_code(event: Event, other: Event, change: str) -> None:
    mutate, code = FIELD_CHANGES[change]
    changed = mutate(event_dict(event), event_dict(other))
    if changed == event_dict(event) or (change == "pubkey+id" and changed["pubkey"] == event.pubkey):
        return  # the two draws agree on this field: nothing changed
    if change == "sig" and other.id == event.id:
        return  # BIP-340 signing is randomised: both are valid signatures of the same event
    with pytest.raises(FedaiError) as info:
        parse_and_verify(dumps(changed))
    assert info.value.code is code, info.value.message


# --- gaps found by these properties, now closed -------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "pubkey", "sig"])
def test_hex_fields_refuse_a_trailing_newline(field: str) -> None:
    event = sign_event(KEYS[0], 1, "hello", [["p", KEYS[1].pubkey]])
    tampered = {**event_dict(event), field: event_dict(event)[field] + "\n"}
    with pytest.raises(FedaiError) as info:
        decode_event(dumps(tampered))
    assert info.value.code is ErrorCode.INVALID_EVENT


@given(depth=st.integers(min_value=1, max_value=100_000), where=st.sampled_from(["top", "tags", "unknown"]))
@example(depth=100_000, where="unknown")
def test_deeply_nested_json_is_a_typed_error(depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    body = {"top": nested, "tags": '{"tags":' + nested + "}", "unknown": '{"x":' + nested + "}"}[where]
    with pytest.raises(FedaiError) as info:
        decode_event(body, max_bytes=len(body))
    assert info.value.code in {ErrorCode.INVALID_JSON, ErrorCode.INVALID_EVENT}
