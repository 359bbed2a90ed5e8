"""Cross-check fedai.protocol against nostr-sdk (rust-nostr): ids, signatures and NIP-19 must agree both ways."""

from __future__ import annotations

import json
import os
import random

import msgspec
import nostr_sdk as ns
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, compute_id, decode_event, sign_event, verify_event
from fedai.protocol.keys import Keys, npub, parse_pubkey, schnorr_verify

KIND = 21033
CREATED_AT = 1_700_000_000

HARD_STRINGS = [
    "",
    "plain ascii",
    "line1\nline2",
    "cr\rlf\r\n",
    "tab\there",
    'double "quote"',
    "back\\slash",
    "\\n literally",
    "slash / and </script>",
    "\b\f",
    "".join(chr(c) for c in range(0x20)),  # every C0 control character
    "\x00",
    "nul\x00inside",
    "\x7f",  # DEL: not escaped by NIP-01
    "\x80\x9f",  # C1 controls
    "\u2028\u2029",  # line/paragraph separators (escaped by some JS serializers, not by NIP-01)
    "é ü ñ ß",
    "中文 日本語 한국어",
    "עברית العربية",  # right-to-left
    "😀🎉👍🏽👨‍👩‍👧",  # astral, modifiers, ZWJ sequence
    "\ufeffbom",
    "\ufffe\uffff",  # noncharacters are still scalar values
    "\U0010ffff",
    "e\u0301",  # combining mark
    " leading and trailing ",
    '{"json":"inside"}',
    "x" * 5000,
]

HARD_TAGS: list[list[str]] = [
    ["t", "a\nb"],
    ["nonce", "\x00\x1f\x7f"],
    ["x-custom", "\u2028", '"', "\\"],
    ["e", "ab" * 32, "", "reply"],
    ["t", ""],
    ["d", "😀 é"],
    ["single"],
]


def _random_strings(count: int, seed: int = 20261101) -> list[str]:
    rng = random.Random(seed)
    ranges = [
        (0x00, 0x1F),
        (0x20, 0x7F),
        (0x80, 0x9F),
        (0xA0, 0x7FF),
        (0x800, 0xD7FF),
        (0xE000, 0xFFFF),
        (0x10000, 0x10FFFF),
    ]
    out: list[str] = []
    for _ in range(count):
        chars: list[str] = []
        for _ in range(rng.randint(0, 40)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        if rng.random() < 0.3:
            chars.insert(rng.randint(0, len(chars)), rng.choice(['"', "\\", "\n", "\u2028", "\x00"]))
        out.append("".join(chars))
    return out


RANDOM_STRINGS = _random_strings(300)


@pytest.fixture(scope="module")
def ours() -> Keys:
    return Keys.generate()


@pytest.fixture(scope="module")
def theirs() -> ns.Keys:
    return ns.Keys.generate()


def _sdk_sign(keys: ns.Keys, content: str, tags: list[list[str]], created_at: int = CREATED_AT) -> ns.Event:
    builder = ns.EventBuilder(ns.Kind(KIND), content).tags([ns.Tag.parse(t) for t in tags])
    return builder.custom_created_at(ns.Timestamp.from_secs(created_at)).finalize(keys)


def _sdk_accepts(ev: Event) -> bool:
    parsed = ns.Event.from_json(ev.to_json().decode())
    return bool(parsed.verify_id() and parsed.verify_signature() and parsed.verify())


def _sdk_round_trip_ours(ours: Keys, content: str, tags: list[list[str]]) -> None:
    ev = sign_event(ours, KIND, content, tags, created_at=CREATED_AT)
    parsed = ns.Event.from_json(ev.to_json().decode())
    assert parsed.verify_id(), f"nostr-sdk recomputed a different id for content {content!r}"
    assert parsed.verify_signature()
    assert parsed.verify()
    assert parsed.id().to_hex() == ev.id
    assert parsed.author().to_hex() == ours.pubkey
    assert parsed.content() == content
    assert [t.to_vec() for t in parsed.tags()] == tags


def _ours_round_trip_sdk(theirs: ns.Keys, content: str, tags: list[list[str]]) -> None:
    sdk_ev = _sdk_sign(theirs, content, tags)
    ev = decode_event(sdk_ev.as_json())
    verify_event(ev)
    assert ev.id == sdk_ev.id().to_hex()
    assert ev.pubkey == theirs.public_key().to_hex()
    assert ev.content == content
    assert ev.tags == tags
    assert ev.created_at == CREATED_AT
    # the id is the same function of the same fields on both sides
    assert compute_id(ev.pubkey, CREATED_AT, KIND, tags, content).hex() == sdk_ev.id().to_hex()
    # and bytes input decodes the same as str input
    assert decode_event(sdk_ev.as_json().encode()) == ev


def test_sdk_tag_helpers_exist() -> None:
    """Guard the accessor names used below, so an API drift fails here with a clear message."""
    tag = ns.Tag.parse(["t", "x"])
    assert tag.to_vec() == ["t", "x"]


# --- our events verify in nostr-sdk ---------------------------------------------------------------------


@pytest.mark.parametrize("content", HARD_STRINGS)
def test_our_events_verify_in_sdk_hard_content(ours: Keys, content: str) -> None:
    _sdk_round_trip_ours(ours, content, [])


@pytest.mark.parametrize("tag", HARD_TAGS)
def test_our_events_verify_in_sdk_hard_tags(ours: Keys, tag: list[str]) -> None:
    _sdk_round_trip_ours(ours, "x", [tag, ["p", ours.pubkey]])


def test_our_events_verify_in_sdk_hard_strings_as_tag_values(ours: Keys) -> None:
    for s in HARD_STRINGS:
        _sdk_round_trip_ours(ours, s, [["t", s], ["x", s, s]])


def test_our_events_verify_in_sdk_random_unicode(ours: Keys) -> None:
    for s in RANDOM_STRINGS:
        _sdk_round_trip_ours(ours, s, [["t", s[::-1]]])


def test_our_sealed_envelope_verifies_in_sdk(ours: Keys) -> None:
    from fedai.protocol.envelope import seal
    from fedai.protocol.messages import InferenceRequest

    other = Keys.generate()
    ev = seal(
        ours,
        KIND,
        InferenceRequest(model="m", prompt="é\n\u2028", max_tokens=3),
        to=other.pubkey,
        reply_to="ab" * 32,
        nonce=True,
        expiration=CREATED_AT + 60,
        created_at=CREATED_AT,
    )
    assert _sdk_accepts(ev)


# --- nostr-sdk's events verify here ---------------------------------------------------------------------


@pytest.mark.parametrize("content", HARD_STRINGS)
def test_sdk_events_verify_here_hard_content(theirs: ns.Keys, content: str) -> None:
    _ours_round_trip_sdk(theirs, content, [])


@pytest.mark.parametrize("tag", HARD_TAGS)
def test_sdk_events_verify_here_hard_tags(theirs: ns.Keys, tag: list[str]) -> None:
    _ours_round_trip_sdk(theirs, "x", [tag])


def test_sdk_events_verify_here_hard_strings_as_tag_values(theirs: ns.Keys) -> None:
    for s in HARD_STRINGS:
        _ours_round_trip_sdk(theirs, s, [["t", s], ["x", s, s]])


def test_sdk_events_verify_here_random_unicode(theirs: ns.Keys) -> None:
    for s in RANDOM_STRINGS:
        _ours_round_trip_sdk(theirs, s, [["t", s[::-1]]])


def test_sdk_event_with_default_timestamp_verifies_here(theirs: ns.Keys) -> None:
    sdk_ev = ns.EventBuilder(ns.Kind(1), "now").finalize(theirs)
    ev = decode_event(sdk_ev.as_json())
    verify_event(ev)
    assert ev.created_at == sdk_ev.created_at().as_secs()


# --- forgeries are refused by both ----------------------------------------------------------------------


def test_forged_content_refused_by_both(ours: Keys, theirs: ns.Keys) -> None:
    # ours, edited
    ev = sign_event(ours, KIND, "pay 1 msat", [["p", ours.pubkey]], created_at=CREATED_AT)
    forged = msgspec.structs.replace(ev, content="pay 1000 msat")
    parsed = ns.Event.from_json(forged.to_json().decode())
    assert not parsed.verify_id()
    assert not parsed.verify()
    with pytest.raises(FedaiError) as info:
        verify_event(forged)
    assert info.value.code is ErrorCode.INVALID_EVENT

    # theirs, edited
    sdk_ev = _sdk_sign(theirs, "pay 1 msat", [])
    d = json.loads(sdk_ev.as_json())
    d["content"] = "pay 1000 msat"
    edited = json.dumps(d)
    assert not ns.Event.from_json(edited).verify()
    with pytest.raises(FedaiError) as info:
        verify_event(decode_event(edited))
    assert info.value.code is ErrorCode.INVALID_EVENT


def test_forged_id_with_recomputed_id_refused_by_both(ours: Keys) -> None:
    """Content edited and the id recomputed: the id checks out, the signature does not."""
    ev = sign_event(ours, KIND, "original", created_at=CREATED_AT)
    new_id = compute_id(ours.pubkey, CREATED_AT, KIND, [], "edited").hex()
    forged = msgspec.structs.replace(ev, content="edited", id=new_id)
    parsed = ns.Event.from_json(forged.to_json().decode())
    assert parsed.verify_id()
    assert not parsed.verify_signature()
    assert not parsed.verify()
    with pytest.raises(FedaiError) as info:
        verify_event(forged)
    assert info.value.code is ErrorCode.INVALID_SIGNATURE


def test_tampered_signature_refused_by_both(ours: Keys, theirs: ns.Keys) -> None:
    ev = sign_event(ours, KIND, "x", created_at=CREATED_AT)
    bad = msgspec.structs.replace(ev, sig=ev.sig[:10] + ("0" if ev.sig[10] != "0" else "1") + ev.sig[11:])
    assert not _sdk_accepts(bad)
    with pytest.raises(FedaiError) as info:
        verify_event(bad)
    assert info.value.code is ErrorCode.INVALID_SIGNATURE

    d = json.loads(_sdk_sign(theirs, "x", []).as_json())
    d["sig"] = "0" * 128
    assert not ns.Event.from_json(json.dumps(d)).verify()
    with pytest.raises(FedaiError) as info:
        verify_event(decode_event(json.dumps(d)))
    assert info.value.code is ErrorCode.INVALID_SIGNATURE


# --- raw signatures and keys ----------------------------------------------------------------------------


def test_sdk_schnorr_signature_verifies_here(theirs: ns.Keys) -> None:
    pub = theirs.public_key().to_hex()
    for _ in range(10):
        msg = os.urandom(32)
        sig = theirs.sign_schnorr(msg)
        assert schnorr_verify(pub, sig, msg)
        assert not schnorr_verify(pub, sig, bytes(32) if msg != bytes(32) else b"\x01" * 32)


def test_same_secret_same_identity_in_both() -> None:
    for _ in range(5):
        ours = Keys.generate()
        sdk = ns.Keys.parse(ours.secret_hex)
        assert sdk.public_key().to_hex() == ours.pubkey
        assert ns.Keys.parse(ours.nsec).public_key().to_hex() == ours.pubkey
        assert sdk.secret_key().to_bech32() == ours.nsec
        assert sdk.public_key().to_bech32() == ours.npub

        sdk_generated = ns.Keys.generate()
        mine = Keys.parse(sdk_generated.secret_key().to_hex())
        assert mine.pubkey == sdk_generated.public_key().to_hex()
        assert Keys.parse(sdk_generated.secret_key().to_bech32()).pubkey == mine.pubkey
        assert mine.nsec == sdk_generated.secret_key().to_bech32()


def test_npub_encodings_agree() -> None:
    for _ in range(10):
        pub = ns.Keys.generate().public_key()
        assert npub(pub.to_hex()) == pub.to_bech32()
        assert parse_pubkey(pub.to_bech32()) == pub.to_hex()
        assert ns.PublicKey.parse(npub(pub.to_hex())).to_hex() == pub.to_hex()


def test_nip19_spec_examples_agree() -> None:
    npub_ex = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    pub_hex = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
    nsec_ex = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
    sec_hex = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
    assert ns.PublicKey.parse(npub_ex).to_hex() == pub_hex == parse_pubkey(npub_ex)
    assert ns.PublicKey.parse(pub_hex).to_bech32() == npub_ex == npub(pub_hex)
    assert ns.SecretKey.parse(nsec_ex).to_hex() == sec_hex == Keys.parse(nsec_ex).secret_hex
    assert ns.SecretKey.parse(sec_hex).to_bech32() == nsec_ex == Keys.parse(sec_hex).nsec
    assert ns.Keys.parse(nsec_ex).public_key().to_hex() == Keys.parse(nsec_ex).pubkey
