"""fedai.protocol.event: NIP-01 serialization, id, signing, verification and decoding."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import (
    DEFAULT_MAX_EVENT_BYTES,
    Event,
    compute_id,
    decode_event,
    event_from_obj,
    is_valid,
    serialize_for_id,
    sign_event,
    verify_event,
)
from fedai.protocol.keys import Keys

PUB = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


def _expect(code: ErrorCode, fn: Any, *args: Any, **kwargs: Any) -> FedaiError:
    with pytest.raises(FedaiError) as info:
        fn(*args, **kwargs)
    assert info.value.code is code, f"expected {code}, got {info.value.code}: {info.value.message}"
    return info.value


# --- serialize_for_id -----------------------------------------------------------------------------------


def test_serialize_for_id_layout_is_compact_nip01() -> None:
    got = serialize_for_id(PUB, 1700000000, 1, [["e", "ab"], ["p", PUB, "wss://r"]], "hello")
    expected = f'[0,"{PUB}",1700000000,1,[["e","ab"],["p","{PUB}","wss://r"]],"hello"]'.encode()
    assert got == expected


def test_serialize_for_id_empty_tags_and_content() -> None:
    assert serialize_for_id(PUB, 0, 0, [], "") == f'[0,"{PUB}",0,0,[],""]'.encode()


def test_serialize_for_id_non_ascii_is_raw_utf8() -> None:
    content = "é ü 中文 😀 \u2028\u2029 \x7f"
    got = serialize_for_id(PUB, 1, 1, [["t", "ñ"]], content)
    assert b"\\u" not in got
    assert content.encode() in got
    assert '"ñ"'.encode() in got


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\n", b"\\n"),
        ("\r", b"\\r"),
        ("\t", b"\\t"),
        ("\b", b"\\b"),
        ("\f", b"\\f"),
        ('"', b'\\"'),
        ("\\", b"\\\\"),
        ("\x00", b"\\u0000"),
        ("\x01", b"\\u0001"),
        ("\x1f", b"\\u001f"),
    ],
)
def test_serialize_for_id_escapes_control_characters(char: str, escaped: bytes) -> None:
    got = serialize_for_id(PUB, 1, 1, [], f"a{char}b")
    assert got.endswith(b'"a' + escaped + b'b"]')
    # the result is still valid JSON that decodes back to the same array
    assert json.loads(got) == [0, PUB, 1, 1, [], f"a{char}b"]


def test_serialize_for_id_matches_stdlib_json_for_hard_strings() -> None:
    content = "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028\u2029é😀'
    tags = [["t", content], ["x", "", "y"]]
    ours = serialize_for_id(PUB, 42, 21033, tags, content)
    reference = json.dumps([0, PUB, 42, 21033, tags, content], separators=(",", ":"), ensure_ascii=False).encode()
    assert ours == reference


def test_compute_id_is_sha256_of_serialization() -> None:
    tags = [["p", PUB]]
    expected = hashlib.sha256(serialize_for_id(PUB, 5, 21033, tags, "x")).digest()
    assert compute_id(PUB, 5, 21033, tags, "x") == expected
    assert compute_id(PUB, 5, 21033, tags, "y") != expected
    assert compute_id(PUB, 6, 21033, tags, "x") != expected
    assert compute_id(PUB, 5, 21034, tags, "x") != expected
    assert compute_id(PUB, 5, 21033, [], "x") != expected


def test_compute_id_accepts_tuples_like_lists() -> None:
    assert compute_id(PUB, 5, 1, [("p", PUB)], "x") == compute_id(PUB, 5, 1, [["p", PUB]], "x")


# --- sign / verify --------------------------------------------------------------------------------------


def test_sign_event_fields_and_verify(keys: Keys) -> None:
    ev = sign_event(keys, 21033, "hello", [("p", PUB), ["nonce", "ab"]], created_at=1700000000)
    assert ev.pubkey == keys.pubkey
    assert ev.created_at == 1700000000
    assert ev.kind == 21033
    assert ev.tags == [["p", PUB], ["nonce", "ab"]]
    assert ev.content == "hello"
    assert ev.id == compute_id(keys.pubkey, 1700000000, 21033, ev.tags, "hello").hex()
    assert len(ev.sig) == 128
    verify_event(ev)
    assert is_valid(ev)


def test_sign_event_defaults_created_at_to_now(keys: Keys) -> None:
    before = int(time.time())
    ev = sign_event(keys, 1, "x")
    after = int(time.time())
    assert before <= ev.created_at <= after
    assert ev.tags == []
    verify_event(ev)


def test_to_json_round_trip(keys: Keys) -> None:
    ev = sign_event(keys, 1, 'line\nquote"é😀\x00', [["t", "\u2028"]], created_at=7)
    raw = ev.to_json()
    assert json.loads(raw) == ev.to_dict()
    assert set(ev.to_dict()) == {"id", "pubkey", "created_at", "kind", "tags", "content", "sig"}
    back = decode_event(raw)
    assert back == ev
    verify_event(back)
    assert decode_event(raw.decode()) == ev


def test_content_changed_after_signing_is_invalid_event(keys: Keys) -> None:
    ev = sign_event(keys, 1, "pay 1 msat", created_at=7)
    forged = msgspec.structs.replace(ev, content="pay 1000 msat")
    _expect(ErrorCode.INVALID_EVENT, verify_event, forged)
    assert not is_valid(forged)


@pytest.mark.parametrize("field", ["created_at", "kind", "tags", "pubkey"])
def test_any_field_changed_after_signing_is_refused(keys: Keys, field: str) -> None:
    ev = sign_event(keys, 1, "x", [["p", PUB]], created_at=7)
    changes: dict[str, Any] = {
        "created_at": 8,
        "kind": 2,
        "tags": [["p", keys.pubkey]],
        "pubkey": Keys.generate().pubkey,
    }
    _expect(ErrorCode.INVALID_EVENT, verify_event, msgspec.structs.replace(ev, **{field: changes[field]}))


def test_valid_signature_of_other_content_with_forged_id(keys: Keys) -> None:
    """A real signature over a different event's id, with the id claimed to be that one: id mismatch."""
    honest = sign_event(keys, 1, "honest", created_at=7)
    forged = msgspec.structs.replace(honest, content="forged")  # keeps the honest id and its valid sig
    _expect(ErrorCode.INVALID_EVENT, verify_event, forged)


def test_recomputed_id_with_stale_signature_is_invalid_signature(keys: Keys) -> None:
    """Content changed and id recomputed, but the signature is still over the old id."""
    honest = sign_event(keys, 1, "honest", created_at=7)
    new_id = compute_id(keys.pubkey, 7, 1, [], "forged").hex()
    forged = msgspec.structs.replace(honest, content="forged", id=new_id)
    _expect(ErrorCode.INVALID_SIGNATURE, verify_event, forged)


def test_tampered_signature_is_invalid_signature(keys: Keys) -> None:
    ev = sign_event(keys, 1, "x", created_at=7)
    flipped = ev.sig[:-1] + ("0" if ev.sig[-1] != "0" else "1")
    _expect(ErrorCode.INVALID_SIGNATURE, verify_event, msgspec.structs.replace(ev, sig=flipped))
    _expect(ErrorCode.INVALID_SIGNATURE, verify_event, msgspec.structs.replace(ev, sig="0" * 128))


def test_signature_by_another_key_is_invalid_signature(keys: Keys) -> None:
    other = Keys.generate()
    ev = sign_event(other, 1, "x", created_at=7)
    # claim it was made by `keys`: id must be recomputed for the claimed pubkey, sig stays other's
    digest = compute_id(keys.pubkey, 7, 1, [], "x")
    claimed = msgspec.structs.replace(ev, pubkey=keys.pubkey, id=digest.hex(), sig=other.sign(digest).hex())
    _expect(ErrorCode.INVALID_SIGNATURE, verify_event, claimed)


def test_off_curve_pubkey_is_invalid_signature_not_a_crash() -> None:
    off_curve = (5).to_bytes(32, "big").hex()
    digest = compute_id(off_curve, 7, 1, [], "x")
    ev = Event(id=digest.hex(), pubkey=off_curve, created_at=7, kind=1, tags=[], content="x", sig="00" * 64)
    _expect(ErrorCode.INVALID_SIGNATURE, verify_event, ev)


# --- decode_event ---------------------------------------------------------------------------------------


def _valid_dict(keys: Keys) -> dict[str, Any]:
    return sign_event(keys, 21033, "x", [["p", PUB]], created_at=1700000000).to_dict()


def test_too_large_checked_before_parsing() -> None:
    blob = b"\xff not json at all " * (DEFAULT_MAX_EVENT_BYTES // 10)
    assert len(blob) > DEFAULT_MAX_EVENT_BYTES
    err = _expect(ErrorCode.TOO_LARGE, decode_event, blob)
    assert err.status == 413
    _expect(ErrorCode.TOO_LARGE, decode_event, "{" * 101, max_bytes=100)


def test_size_limit_is_inclusive(keys: Keys) -> None:
    raw = sign_event(keys, 1, "x", created_at=7).to_json()
    assert decode_event(raw, max_bytes=len(raw)).content == "x"
    _expect(ErrorCode.TOO_LARGE, decode_event, raw, max_bytes=len(raw) - 1)


def test_size_limit_counts_utf8_bytes_of_str_input(keys: Keys) -> None:
    raw = sign_event(keys, 1, "é" * 100, created_at=7).to_json()
    text = raw.decode()
    assert len(text) < len(raw)
    assert decode_event(text, max_bytes=len(raw)).content == "é" * 100
    _expect(ErrorCode.TOO_LARGE, decode_event, text, max_bytes=len(text))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"{",
        b'{"content": ',
        b"\xff\xfe",
        b'{"content":"\xff"}',  # invalid UTF-8 inside a string
        rb'{"content":"\ud800"}',  # escaped lone surrogate
        '{"content":"\ud800"}',  # lone surrogate in a str body
    ],
)
def test_invalid_json(raw: bytes | str) -> None:
    err = _expect(ErrorCode.INVALID_JSON, decode_event, raw)
    assert err.status == 400


def test_invalid_utf8_inside_a_valid_event_is_invalid_json(keys: Keys) -> None:
    raw = sign_event(keys, 1, "x", created_at=7).to_json().replace(b'"content":"x"', b'"content":"\xc3"')
    _expect(ErrorCode.INVALID_JSON, decode_event, raw)


@pytest.mark.parametrize("missing", ["id", "pubkey", "created_at", "kind", "tags", "content", "sig"])
def test_missing_field_is_invalid_event(keys: Keys, missing: str) -> None:
    d = _valid_dict(keys)
    del d[missing]
    err = _expect(ErrorCode.INVALID_EVENT, decode_event, json.dumps(d).encode())
    assert missing in err.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "A" * 64),  # uppercase hex
        ("id", "a" * 63),
        ("id", "g" * 64),
        ("id", 5),
        ("pubkey", "F" * 64),
        ("pubkey", "a" * 65),
        ("sig", "A" * 128),
        ("sig", "a" * 127),
        ("created_at", "1700000000"),
        ("created_at", 1.5),
        ("created_at", 1700000000.0),
        ("created_at", True),
        ("created_at", -1),
        ("created_at", 2**53 + 1),
        ("kind", -1),
        ("kind", 65536),
        ("kind", "1"),
        ("tags", {}),
        ("tags", ["p"]),
        ("tags", [["p", 1]]),
        ("tags", [["p", None]]),
        ("tags", None),
        ("content", 5),
        ("content", None),
        ("content", ["x"]),
    ],
)
def test_wrong_type_or_shape_is_invalid_event(keys: Keys, field: str, value: Any) -> None:
    d = _valid_dict(keys)
    d[field] = value
    _expect(ErrorCode.INVALID_EVENT, decode_event, json.dumps(d).encode())


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"event"', b"[1,2]"])
def test_non_object_is_invalid_event(raw: bytes) -> None:
    _expect(ErrorCode.INVALID_EVENT, decode_event, raw)


def test_unknown_top_level_fields_are_ignored(keys: Keys) -> None:
    d = _valid_dict(keys)
    d["relay_hint"] = "wss://x"
    ev = decode_event(json.dumps(d).encode())
    verify_event(ev)
    assert ev.to_dict() == _valid_dict(keys) | {"id": ev.id, "sig": ev.sig}


def test_decode_event_does_not_verify(keys: Keys) -> None:
    d = _valid_dict(keys)
    d["content"] = "changed"
    ev = decode_event(json.dumps(d).encode())  # schema fine
    assert ev.content == "changed"
    _expect(ErrorCode.INVALID_EVENT, verify_event, ev)


def test_event_from_obj(keys: Keys) -> None:
    d = _valid_dict(keys)
    ev = event_from_obj(d)
    verify_event(ev)
    assert ev.to_dict() == d
    bad = dict(d, id=d["id"].upper())
    _expect(ErrorCode.INVALID_EVENT, event_from_obj, bad)
    _expect(ErrorCode.INVALID_EVENT, event_from_obj, "not an event")


# --- tag helpers ----------------------------------------------------------------------------------------


def test_tag_and_tag_values() -> None:
    ev = Event(
        id="0" * 64,
        pubkey=PUB,
        created_at=1,
        kind=1,
        tags=[["p", "a"], ["e", "x"], ["p", "b", "relay"], ["nonce"], [], ["p", "c"]],
        content="",
        sig="0" * 128,
    )
    assert ev.tag("p") == "a"
    assert ev.tag("e") == "x"
    assert ev.tag("nonce") is None  # a tag with no value has no value
    assert ev.tag("missing") is None
    assert ev.tag_values("p") == ["a", "b", "c"]
    assert ev.tag_values("e") == ["x"]
    assert ev.tag_values("nonce") == []
    assert ev.tag_values("missing") == []
