"""fedai.protocol.jsonguard and the decoders that use it: deep JSON is a typed 400, never a RecursionError."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
import pytest

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import decode_event, sign_event
from fedai.protocol.jsonguard import MAX_JSON_DEPTH, check_depth, decode_json, has_nul, too_deep
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, decode_payload

DEEP = 100_000  # far past any recursion limit


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("make", [nested, objects])
def test_the_bound_is_exact(make: Callable[[int], str]) -> None:
    assert not too_deep(make(MAX_JSON_DEPTH))
    assert too_deep(make(MAX_JSON_DEPTH + 1))
    assert too_deep(make(DEEP))


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 1000, "{" * 1000, 'quote " and [[[', "\\[[[["])
    assert text.count("[") > MAX_JSON_DEPTH
    assert not too_deep(text) and not too_deep(text.encode())


def test_an_escaped_quote_does_not_end_a_string() -> None:
    assert not too_deep('["\\"' + "[" * 200 + '"]')
    assert too_deep('["\\\\"' + ", " + nested(MAX_JSON_DEPTH + 1) + "]")  # \\ is a backslash; the string ends


def test_many_shallow_brackets_are_fine() -> None:
    wide = "[" + ",".join(["[]"] * 10_000) + "]"
    assert not too_deep(wide)


def test_unterminated_strings_and_raw_values_are_handled() -> None:
    assert not too_deep('["unterminated ' + "[" * 500)
    assert not too_deep('"' + '\\"' * 5000)
    raw = msgspec.json.decode(b"[1," + nested(MAX_JSON_DEPTH + 1).encode() + b"]", type=list[msgspec.Raw])[1]
    assert too_deep(raw)


def test_decode_json_gives_typed_errors() -> None:
    assert decode_json(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for bad in (nested(DEEP).encode(), b"{not json", b"\xff"):
        with pytest.raises(FedaiError) as info:
            decode_json(bad)
        assert (info.value.code, info.value.status) == (ErrorCode.INVALID_JSON, 400)
    with pytest.raises(FedaiError) as event_err:
        check_depth(nested(DEEP), ErrorCode.INVALID_EVENT, "content")
    assert event_err.value.code is ErrorCode.INVALID_EVENT


def _event_with(field: str, value: str) -> str:
    keys = Keys.generate()
    event = sign_event(keys, 1, "").to_dict()
    document = json.dumps(event)
    return document[:-1] + f', "{field}": {value}' + "}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, DEEP])
def test_decode_event_refuses_deep_json_anywhere(depth: int) -> None:
    # in an unknown field, which the typed decoder would otherwise skip (and recurse into)
    for raw in (_event_with("extra", nested(depth)), _event_with("tags2", objects(depth))):
        with pytest.raises(FedaiError) as info:
            decode_event(raw, max_bytes=10_000_000)
        assert info.value.code is ErrorCode.INVALID_JSON
    # in the tags themselves
    tags = json.dumps(sign_event(Keys.generate(), 1, "").to_dict()).replace('"tags": []', f'"tags": {nested(depth)}')
    with pytest.raises(FedaiError) as tag_err:
        decode_event(tags, max_bytes=10_000_000)
    assert tag_err.value.code is ErrorCode.INVALID_JSON


def test_an_event_at_ordinary_depth_still_decodes() -> None:
    event = sign_event(Keys.generate(), 1, "[[[[x]]]]", [["t", "a"], ["e", "b", "c"]])
    assert decode_event(event.to_json()) == event


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, DEEP])
def test_decode_payload_refuses_deep_content(depth: int) -> None:
    content = '{"model": "m", "prompt": "x", "max_tokens": 1, "extra": ' + nested(depth) + "}"
    with pytest.raises(FedaiError) as info:
        decode_payload(content, InferenceRequest)
    assert (info.value.code, info.value.status) == (ErrorCode.INVALID_EVENT, 400)


def test_a_sealed_payload_round_trips() -> None:
    keys = Keys.generate()
    payload = InferenceRequest(model="m", prompt="[[[[", max_tokens=3)
    event = seal(keys, Kind.INFER_REQUEST, payload, to=keys.pubkey)
    assert decode_payload(event.content, InferenceRequest) == payload


# -- NUL characters (PostgreSQL's text and jsonb cannot hold U+0000) ------------------------------------------


@pytest.mark.parametrize(
    ("text", "nul"),
    [
        ('{"a":"x\\u0000y"}', True),  # an escaped NUL
        ('{"a":"x\\\\\\u0000y"}', True),  # an escaped backslash, then an escaped NUL
        ('{"a":"x\\\\u0000y"}', False),  # an escaped backslash, then the text "u0000"
        ('{"a":"\\\\\\\\u0000"}', False),  # two escaped backslashes, then text
        ('{"a":"x\\u00001"}', True),
        ('{"a":"x\\u0001"}', False),
        ('{"a":"x"}', False),
        ('{"a":"x\x00"}', True),  # a raw NUL byte (invalid JSON, refused all the same)
    ],
)
def test_nul_is_found_only_where_a_string_holds_one(text: str, nul: bool) -> None:
    assert has_nul(text) is nul and has_nul(text.encode()) is nul
    if not nul and "\x00" not in text:
        assert "\x00" not in json.dumps(json.loads(text))  # the decoded value indeed holds no NUL


def test_a_nul_in_an_envelope_tag_a_payload_or_a_body_is_a_typed_400() -> None:
    keys = Keys.generate()
    in_tag = sign_event(keys, Kind.INFER_REQUEST, "{}", [["x", "a\x00b"]]).to_json()
    assert decode_event(in_tag).tag("x") == "a\x00b"  # a valid NIP-01 event: only our envelopes refuse it
    with pytest.raises(FedaiError) as err:
        open_envelope(in_tag, InferenceRequest, kinds=(Kind.INFER_REQUEST,))
    assert err.value.code == ErrorCode.INVALID_EVENT and "NUL" in err.value.message
    payload = json.dumps({"model": "m\x00", "prompt": "p", "max_tokens": 1})
    with pytest.raises(FedaiError) as err:
        decode_payload(payload, InferenceRequest)
    assert err.value.code == ErrorCode.INVALID_EVENT and "NUL" in err.value.message
    with pytest.raises(FedaiError) as err:
        decode_json(json.dumps({"messages": [{"role": "user", "content": "hi\x00"}]}))
    assert err.value.code == ErrorCode.INVALID_JSON and "NUL" in err.value.message
