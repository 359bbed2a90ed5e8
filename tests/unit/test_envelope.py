# Long but one concept: every rule open_envelope applies, each with its error code.
"""fedai.protocol.envelope: sealing and every rule `open_envelope` applies, each with its error code."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from fedai.protocol.envelope import DEFAULT_CLOCK_SKEW_S, Opened, check_event, open_envelope, open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, compute_id, sign_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, InferenceRequest, InferenceResponse, Usage

NOW = 1_700_000_000
REQ = InferenceRequest(model="m", prompt="hello", max_tokens=8)
INFER = {Kind.INFER_REQUEST}


@pytest.fixture(scope="module")
def client() -> Keys:
    return Keys.generate()


@pytest.fixture(scope="module")
def router() -> Keys:
    return Keys.generate()


def _raw(ev: Event) -> bytes:
    return ev.to_json()


def _expect(code: ErrorCode, raw: bytes | str, **kwargs: Any) -> FedaiError:
    kwargs.setdefault("kinds", INFER)
    kwargs.setdefault("now", NOW)
    cls = kwargs.pop("cls", InferenceRequest)
    with pytest.raises(FedaiError) as info:
        open_envelope(raw, cls, **kwargs)
    assert info.value.code is code, f"expected {code}, got {info.value.code}: {info.value.message}"
    return info.value


def _request(client: Keys, router: Keys, **kwargs: Any) -> Event:
    kwargs.setdefault("created_at", NOW)
    return seal(client, Kind.INFER_REQUEST, REQ, to=router.pubkey, nonce=True, **kwargs)


def _resign(keys: Keys, ev: Event, *, content: str) -> Event:
    """Re-sign `ev` with other content: a well-formed, correctly signed envelope."""
    return sign_event(keys, ev.kind, content, ev.tags, ev.created_at)


# --- seal -----------------------------------------------------------------------------------------------


def test_seal_adds_tags_in_order(client: Keys, router: Keys) -> None:
    ev = seal(
        client,
        Kind.INFER_RESPONSE,
        REQ,
        to=router.pubkey,
        reply_to="cd" * 32,
        nonce=True,
        expiration=NOW + 30,
        extra_tags=[("d", "x")],
        created_at=NOW,
    )
    names = [t[0] for t in ev.tags]
    assert names == ["p", "e", "nonce", "expiration", "d"]
    assert ev.tag("p") == router.pubkey
    assert ev.tag("e") == "cd" * 32
    nonce = ev.tag("nonce")
    assert nonce is not None
    assert len(nonce) == 32
    assert int(nonce, 16) >= 0
    assert ev.tag("expiration") == str(NOW + 30)
    assert ev.tag("d") == "x"
    assert ev.kind == Kind.INFER_RESPONSE
    assert ev.created_at == NOW
    assert ev.pubkey == client.pubkey
    assert json.loads(ev.content) == {"model": "m", "prompt": "hello", "max_tokens": 8}
    verify_event(ev)


def test_seal_without_options_has_no_tags(client: Keys) -> None:
    ev = seal(client, Kind.ACK, Ack(), created_at=NOW)
    assert ev.tags == []
    assert ev.content == "{}"
    verify_event(ev)


def test_seal_accepts_preencoded_string_payload(client: Keys) -> None:
    ev = seal(client, Kind.ACK, '{"status":"ok"}', created_at=NOW)
    assert ev.content == '{"status":"ok"}'


def test_two_seals_in_the_same_second_differ(client: Keys, router: Keys) -> None:
    a = _request(client, router)
    b = _request(client, router)
    assert a.created_at == b.created_at
    assert a.content == b.content
    assert a.tag("nonce") != b.tag("nonce")
    assert a.id != b.id
    # without a nonce, the ids collide (which is what the nonce is for)
    c = seal(client, Kind.INFER_REQUEST, REQ, to=router.pubkey, created_at=NOW)
    d = seal(client, Kind.INFER_REQUEST, REQ, to=router.pubkey, created_at=NOW)
    assert c.id == d.id


# --- open_envelope: the happy path ----------------------------------------------------------------------


def test_open_envelope_accepts_a_good_request(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    opened = open_envelope(
        _raw(ev), InferenceRequest, kinds=INFER, recipient=router.pubkey, signers={client.pubkey}, now=NOW
    )
    assert isinstance(opened, Opened)
    assert opened.event == ev
    assert opened.payload == REQ


def test_open_envelope_accepts_str_input(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    assert open_envelope(_raw(ev).decode(), InferenceRequest, kinds=INFER, now=NOW).payload == REQ


def test_optional_checks_are_skipped_when_not_asked(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    # no recipient, no signers, no reply_to: any signer, any p tag
    assert open_envelope(_raw(ev), InferenceRequest, kinds=INFER, now=NOW).payload == REQ


def test_response_bound_to_request(client: Keys, router: Keys) -> None:
    request = _request(client, router)
    resp = InferenceResponse(
        model="m", output="hi", finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1), latency_ms=2.0
    )
    reply = seal(router, Kind.INFER_RESPONSE, resp, to=client.pubkey, reply_to=request.id, created_at=NOW)
    opened = open_envelope(
        _raw(reply),
        InferenceResponse,
        kinds={Kind.INFER_RESPONSE},
        recipient=client.pubkey,
        signers={router.pubkey},
        reply_to=request.id,
        now=NOW,
    )
    assert opened.payload == resp
    # the same reply offered as the answer to a different request
    other = _request(client, router)
    _expect(
        ErrorCode.INVALID_EVENT,
        _raw(reply),
        cls=InferenceResponse,
        kinds={Kind.INFER_RESPONSE},
        reply_to=other.id,
    )


# --- kind -----------------------------------------------------------------------------------------------


def test_wrong_kind_is_invalid_event(client: Keys, router: Keys) -> None:
    ev = seal(client, Kind.QUOTE_REQUEST, REQ, to=router.pubkey, nonce=True, created_at=NOW)
    err = _expect(ErrorCode.INVALID_EVENT, _raw(ev))
    assert "kind" in err.message
    # accepted when the kind is in the set
    open_envelope(_raw(ev), InferenceRequest, kinds={Kind.QUOTE_REQUEST, Kind.INFER_REQUEST}, now=NOW)


# --- freshness ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (-DEFAULT_CLOCK_SKEW_S - 1, ErrorCode.STALE),  # too old
        (-3600, ErrorCode.STALE),
        (DEFAULT_CLOCK_SKEW_S + 1, ErrorCode.STALE),  # from the future
        (86_400, ErrorCode.STALE),
        (-DEFAULT_CLOCK_SKEW_S, None),  # exactly on the edge: accepted
        (DEFAULT_CLOCK_SKEW_S, None),
        (-30, None),
        (30, None),
        (0, None),
    ],
)
def test_freshness_window(client: Keys, router: Keys, offset: int, code: ErrorCode | None) -> None:
    ev = _request(client, router, created_at=NOW + offset)
    if code is None:
        assert open_envelope(_raw(ev), InferenceRequest, kinds=INFER, now=NOW).payload == REQ
    else:
        err = _expect(code, _raw(ev))
        assert err.status == 401


def test_custom_skew_and_fractional_now(client: Keys, router: Keys) -> None:
    ev = _request(client, router, created_at=NOW - 10)
    _expect(ErrorCode.STALE, _raw(ev), skew_s=5)
    assert open_envelope(_raw(ev), InferenceRequest, kinds=INFER, skew_s=10, now=NOW).payload == REQ
    _expect(ErrorCode.STALE, _raw(ev), skew_s=10, now=NOW + 0.5)


def test_freshness_uses_the_real_clock_by_default(client: Keys, router: Keys) -> None:
    fresh = seal(client, Kind.INFER_REQUEST, REQ, nonce=True)  # created_at = now
    assert open_envelope(_raw(fresh), InferenceRequest, kinds=INFER).payload == REQ
    old = _request(client, router, created_at=NOW)  # 2023: long stale by the real clock
    with pytest.raises(FedaiError) as info:
        open_envelope(_raw(old), InferenceRequest, kinds=INFER)
    assert info.value.code is ErrorCode.STALE


# --- expiration (NIP-40) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiration", "code"),
    [
        (NOW - 1, ErrorCode.EXPIRED),
        (NOW, ErrorCode.EXPIRED),  # expiration is the first instant it is no longer valid
        (NOW + 1, None),
        (NOW + 3600, None),
    ],
)
def test_expiration(client: Keys, router: Keys, expiration: int, code: ErrorCode | None) -> None:
    ev = _request(client, router, expiration=expiration)
    if code is None:
        assert open_envelope(_raw(ev), InferenceRequest, kinds=INFER, now=NOW).payload == REQ
    else:
        assert _expect(code, _raw(ev)).status == 401


@pytest.mark.parametrize("value", ["", "soon", "1.5e9", "1700000000.5", "0x10", "None"])
def test_malformed_expiration_is_invalid_event(client: Keys, router: Keys, value: str) -> None:
    ev = _request(client, router, extra_tags=[["expiration", value]])
    err = _expect(ErrorCode.INVALID_EVENT, _raw(ev))
    assert "expiration" in err.message


def test_huge_expiration_digit_string_is_invalid_event_not_a_crash(client: Keys, router: Keys) -> None:
    ev = _request(client, router, extra_tags=[["expiration", "9" * 5000]])
    _expect(ErrorCode.INVALID_EVENT, _raw(ev))


# --- recipient ------------------------------------------------------------------------------------------


def test_wrong_recipient(client: Keys, router: Keys) -> None:
    other = Keys.generate()
    ev = _request(client, other)  # addressed to another router
    err = _expect(ErrorCode.WRONG_RECIPIENT, _raw(ev), recipient=router.pubkey)
    assert err.status == 403
    # ... and accepted by the one it was addressed to
    open_envelope(_raw(ev), InferenceRequest, kinds=INFER, recipient=other.pubkey, now=NOW)


def test_missing_recipient(client: Keys, router: Keys) -> None:
    ev = seal(client, Kind.INFER_REQUEST, REQ, nonce=True, created_at=NOW)
    _expect(ErrorCode.WRONG_RECIPIENT, _raw(ev), recipient=router.pubkey)


@pytest.mark.parametrize("second", ["self", "other"])
def test_two_p_tags_are_wrong_recipient(client: Keys, router: Keys, second: str) -> None:
    other = router.pubkey if second == "self" else Keys.generate().pubkey
    ev = _request(client, router, extra_tags=[["p", other]])
    _expect(ErrorCode.WRONG_RECIPIENT, _raw(ev), recipient=router.pubkey)


def test_recipient_in_npub_form_is_not_the_hex_key(client: Keys, router: Keys) -> None:
    ev = seal(client, Kind.INFER_REQUEST, REQ, to=router.npub, nonce=True, created_at=NOW)
    _expect(ErrorCode.WRONG_RECIPIENT, _raw(ev), recipient=router.pubkey)


# --- signer ---------------------------------------------------------------------------------------------


def test_signer_not_allowed_is_forbidden(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    err = _expect(ErrorCode.FORBIDDEN, _raw(ev), recipient=router.pubkey, signers={Keys.generate().pubkey})
    assert err.status == 403
    _expect(ErrorCode.FORBIDDEN, _raw(ev), signers=frozenset())
    open_envelope(_raw(ev), InferenceRequest, kinds=INFER, signers=[Keys.generate().pubkey, client.pubkey], now=NOW)


# --- id and signature -----------------------------------------------------------------------------------


def test_forged_id_is_invalid_event(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    forged = msgspec.structs.replace(ev, content='{"model":"m","prompt":"evil","max_tokens":8}')
    err = _expect(ErrorCode.INVALID_EVENT, _raw(forged), recipient=router.pubkey, signers={client.pubkey})
    assert "id" in err.message


def test_bad_signature_is_invalid_signature(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    bad_sig = msgspec.structs.replace(ev, sig=ev.sig[:-2] + ("00" if ev.sig[-2:] != "00" else "01"))
    err = _expect(ErrorCode.INVALID_SIGNATURE, _raw(bad_sig))
    assert err.status == 401


def test_impersonation_is_invalid_signature(client: Keys, router: Keys) -> None:
    """An attacker claims to be `client` (an allowed signer) but signs with their own key."""
    attacker = Keys.generate()
    ev = _request(client, router)
    digest = compute_id(client.pubkey, ev.created_at, ev.kind, ev.tags, ev.content)
    claimed = msgspec.structs.replace(ev, id=digest.hex(), sig=attacker.sign(digest).hex())
    _expect(ErrorCode.INVALID_SIGNATURE, _raw(claimed), signers={client.pubkey})


# --- e binding ------------------------------------------------------------------------------------------


def test_e_binding_rules(client: Keys, router: Keys) -> None:
    request_id = "ab" * 32
    kinds = {Kind.ACK}
    good = seal(router, Kind.ACK, Ack(), reply_to=request_id, created_at=NOW)
    assert open_envelope(_raw(good), Ack, kinds=kinds, reply_to=request_id, now=NOW).payload == Ack()
    missing = seal(router, Kind.ACK, Ack(), created_at=NOW)
    wrong = seal(router, Kind.ACK, Ack(), reply_to="cd" * 32, created_at=NOW)
    double = seal(router, Kind.ACK, Ack(), reply_to=request_id, extra_tags=[["e", "cd" * 32]], created_at=NOW)
    for ev in (missing, wrong, double):
        err = _expect(ErrorCode.INVALID_EVENT, _raw(ev), cls=Ack, kinds=kinds, reply_to=request_id)
        assert "bound" in err.message


# --- payload and size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"model":"m","max_tokens":8}',  # neither prompt nor messages
        '{"model":"m","prompt":"x","max_tokens":0}',
        "not json",
        "[]",
        "",
    ],
)
def test_payload_schema_failure_is_invalid_event(client: Keys, router: Keys, content: str) -> None:
    ev = _request(client, router)
    bad = _resign(client, ev, content=content)
    err = _expect(ErrorCode.INVALID_EVENT, _raw(bad))
    assert "InferenceRequest" in err.message


def test_too_large(client: Keys, router: Keys) -> None:
    big = InferenceRequest(model="m", prompt="x" * 5000, max_tokens=8)
    ev = seal(client, Kind.INFER_REQUEST, big, to=router.pubkey, created_at=NOW)
    raw = _raw(ev)
    err = _expect(ErrorCode.TOO_LARGE, raw, max_bytes=len(raw) - 1)
    assert err.status == 413
    assert open_envelope(raw, InferenceRequest, kinds=INFER, max_bytes=len(raw), now=NOW).payload == big
    _expect(ErrorCode.TOO_LARGE, b"x" * 300_000)  # default limit, before parsing


def test_not_json_is_invalid_json() -> None:
    _expect(ErrorCode.INVALID_JSON, b"{not json")


def test_envelope_schema_failure_is_invalid_event(client: Keys, router: Keys) -> None:
    d = _request(client, router).to_dict()
    d["id"] = d["id"].upper()
    _expect(ErrorCode.INVALID_EVENT, json.dumps(d))


# --- rule order: cheap checks come first, so a forged envelope cannot cost a verify ---------------------


def test_rule_order(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    forged = msgspec.structs.replace(ev, sig="00" * 64, created_at=NOW - 3600)
    # stale is reported before the bad signature
    _expect(ErrorCode.STALE, _raw(forged))
    # wrong recipient before forbidden before signature
    forged = msgspec.structs.replace(ev, sig="00" * 64)
    _expect(ErrorCode.WRONG_RECIPIENT, _raw(forged), recipient=Keys.generate().pubkey, signers=set())
    _expect(ErrorCode.FORBIDDEN, _raw(forged), recipient=router.pubkey, signers=set())
    _expect(ErrorCode.INVALID_SIGNATURE, _raw(forged), recipient=router.pubkey, signers={client.pubkey})


# --- open_event / check_event ---------------------------------------------------------------------------


def test_open_event_applies_the_same_rules(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    assert open_event(ev, InferenceRequest, kinds=INFER, recipient=router.pubkey, now=NOW).payload == REQ
    with pytest.raises(FedaiError) as info:
        open_event(ev, InferenceRequest, kinds=INFER, recipient=client.pubkey, now=NOW)
    assert info.value.code is ErrorCode.WRONG_RECIPIENT
    with pytest.raises(FedaiError) as info:
        open_event(ev, InferenceRequest, kinds=INFER, now=NOW + 3600)
    assert info.value.code is ErrorCode.STALE
    forged = msgspec.structs.replace(ev, content='{"model":"m","prompt":"evil","max_tokens":8}')
    with pytest.raises(FedaiError) as info:
        open_event(forged, InferenceRequest, kinds=INFER, now=NOW)
    assert info.value.code is ErrorCode.INVALID_EVENT


def test_check_event_passes_or_raises(client: Keys, router: Keys) -> None:
    ev = _request(client, router)
    check_event(ev, kinds=INFER, recipient=router.pubkey, signers={client.pubkey}, now=NOW)  # does not raise
    with pytest.raises(FedaiError) as info:
        check_event(ev, kinds={Kind.ACK}, now=NOW)
    assert info.value.code is ErrorCode.INVALID_EVENT
