"""Properties of envelope checks (`open_envelope`, `open_event`): any input opens or fails with a `FedaiError`;
each rule refuses exactly what it should, with its code; several broken rules report the first one in the
documented order (kind, freshness, expiration, recipient, signer, id and signature, `e` binding, payload)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from fedai.protocol.envelope import open_envelope, open_event, seal
from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import DEFAULT_MAX_EVENT_BYTES, Event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, decode_payload, encode_payload
from tests.support.strategies import any_text, attempt, dumps, hex_string, json_values, schema_json

NOW = 1_700_000_000
CLIENT, ROUTER, STRANGER = (Keys(bytes([i]) * 32) for i in (7, 8, 9))
KINDS = {Kind.INFER_REQUEST}
REQUEST_ID = "ab" * 32
REQ = InferenceRequest(model="m", prompt="hello", max_tokens=8)
ENVELOPE_CODES = {
    ErrorCode.INVALID_JSON,
    ErrorCode.INVALID_EVENT,
    ErrorCode.TOO_LARGE,
    ErrorCode.INVALID_SIGNATURE,
    ErrorCode.STALE,
    ErrorCode.EXPIRED,
    ErrorCode.WRONG_RECIPIENT,
    ErrorCode.FORBIDDEN,
}


def opened(raw: bytes | str, **kwargs: Any) -> Any:
    """Open with the strict options (recipient, signer, reply binding); None if refused with an envelope code."""
    options: dict[str, Any] = {
        "kinds": KINDS,
        "recipient": ROUTER.pubkey,
        "signers": {CLIENT.pubkey},
        "reply_to": REQUEST_ID,
        "now": NOW,
    }
    options.update(kwargs)
    result, code = attempt(open_envelope, raw, InferenceRequest, **options)
    assert code is None or code in ENVELOPE_CODES, f"unexpected code {code}"
    return result


def code_of(raw: bytes | str, **kwargs: Any) -> ErrorCode | None:
    return attempt(open_envelope, raw, InferenceRequest, **{"kinds": KINDS, "now": NOW, **kwargs})[1]


# --- arbitrary input ----------------------------------------------------------------------------------------


@given(raw=st.binary(max_size=300) | any_text)
def test_arbitrary_input_opens_or_fails_with_an_envelope_code(raw: bytes | str) -> None:
    assert opened(raw) is None  # random input never carries a valid signature


@given(value=json_values)
def test_arbitrary_json_is_an_invalid_event(value: Any) -> None:
    assert code_of(dumps(value)) is ErrorCode.INVALID_EVENT


@given(content=any_text | json_values.map(lambda v: dumps(v).decode()))
@example(content='{"model":"m","prompt":"p","messages":[{"role":"user","content":"x"}],"max_tokens":1}')
@example(content='{"model":"m","prompt":"p","max_tokens":0}')
def test_a_correctly_signed_envelope_with_any_content_opens_or_is_an_invalid_event(content: str) -> None:
    try:
        event = sign_event(CLIENT, Kind.INFER_REQUEST, content, [["p", ROUTER.pubkey]], NOW)
    except UnicodeEncodeError:
        assume(False)  # a lone surrogate cannot be signed: it has no UTF-8 form
        raise
    result, code = attempt(open_event, event, InferenceRequest, kinds=KINDS, recipient=ROUTER.pubkey, now=NOW)
    assert code is ErrorCode.INVALID_EVENT if result is None else isinstance(result.payload, InferenceRequest)


# --- each rule ----------------------------------------------------------------------------------------------


@given(
    payload=schema_json(InferenceRequest),
    skew=st.integers(0, 120),
    offset=st.integers(-200, 200),
    fraction=st.floats(0, 0.999),
)
def test_valid_envelopes_round_trip_and_freshness_is_exactly_the_skew(
    payload: dict[str, Any], skew: int, offset: int, fraction: float
) -> None:
    req, _ = attempt(decode_payload, dumps(payload), InferenceRequest)
    assume(req is not None)  # a cross-field rule (prompt xor messages) refused it
    event = seal(CLIENT, Kind.INFER_REQUEST, req, to=ROUTER.pubkey, reply_to=REQUEST_ID, created_at=NOW + offset)
    now = NOW + fraction
    result = opened(event.to_json(), skew_s=skew, now=now)
    from_event = attempt(open_event, event, InferenceRequest, kinds=KINDS, skew_s=skew, now=now)
    if abs(now - event.created_at) > skew:
        assert result is None and code_of(event.to_json(), skew_s=skew, now=now) is ErrorCode.STALE
        assert from_event[1] is ErrorCode.STALE
    else:
        assert from_event[0] is not None and from_event[0].payload == req
        assert result is not None and result.payload == req and result.event == event
        assert encode_payload(result.payload) == encode_payload(req)


@given(expiration=st.integers(NOW - 5, NOW + 5).map(str) | any_text)
@example(expiration=str(NOW))
@example(expiration="1" * 5000)  # int() refuses more than 4300 digits
@example(expiration=" 1700000001 ")
def test_expiration_is_an_integer_after_now(expiration: str) -> None:
    try:
        event = seal(
            CLIENT, Kind.INFER_REQUEST, REQ, to=ROUTER.pubkey, created_at=NOW, extra_tags=[["expiration", expiration]]
        )
    except UnicodeEncodeError:
        assume(False)
        raise
    code = code_of(event.to_json(), recipient=ROUTER.pubkey)
    if expiration.strip().isdecimal() and len(expiration.strip()) < 4000:
        assert code is (ErrorCode.EXPIRED if int(expiration) <= NOW else None)
    else:
        assert code in {None, ErrorCode.INVALID_EVENT, ErrorCode.EXPIRED}


addressees = st.lists(st.sampled_from([ROUTER.pubkey, STRANGER.pubkey, CLIENT.pubkey]) | hex_string(64), max_size=3)


@given(
    p_tags=addressees,
    e_tags=st.lists(st.sampled_from([REQUEST_ID, "cd" * 32]), max_size=3),
    signer=st.sampled_from([CLIENT, STRANGER]),
)
def test_recipient_signer_and_reply_binding_are_exact(p_tags: list[str], e_tags: list[str], signer: Keys) -> None:
    tags = [["p", p] for p in p_tags] + [["e", e] for e in e_tags]
    event = seal(signer, Kind.INFER_REQUEST, REQ, created_at=NOW, extra_tags=tags)
    if p_tags != [ROUTER.pubkey]:
        expected: ErrorCode | None = ErrorCode.WRONG_RECIPIENT
    elif signer is not CLIENT:
        expected = ErrorCode.FORBIDDEN
    elif e_tags != [REQUEST_ID]:
        expected = ErrorCode.INVALID_EVENT
    else:
        expected = None
    kwargs = {"recipient": ROUTER.pubkey, "signers": {CLIENT.pubkey}, "reply_to": REQUEST_ID}
    assert code_of(event.to_json(), **kwargs) is expected


# --- the order of the checks --------------------------------------------------------------------------------

# (flaw, code) in the order open_envelope checks them
ORDER = [
    ("kind", ErrorCode.INVALID_EVENT),
    ("stale", ErrorCode.STALE),
    ("expiration_garbage", ErrorCode.INVALID_EVENT),
    ("expired", ErrorCode.EXPIRED),
    ("recipient", ErrorCode.WRONG_RECIPIENT),
    ("signer", ErrorCode.FORBIDDEN),
    ("id", ErrorCode.INVALID_EVENT),
    ("signature", ErrorCode.INVALID_SIGNATURE),
    ("reply", ErrorCode.INVALID_EVENT),
    ("payload", ErrorCode.INVALID_EVENT),
]


def build(flaws: set[str]) -> Event:
    tags = [
        ["p", STRANGER.pubkey if "recipient" in flaws else ROUTER.pubkey],
        ["e", "cd" * 32 if "reply" in flaws else REQUEST_ID],
    ]
    if "expiration_garbage" in flaws:
        tags.append(["expiration", "soon"])
    elif "expired" in flaws:
        tags.append(["expiration", str(NOW - 1)])
    content = '{"model":""}' if "payload" in flaws else encode_payload(REQ)
    kind = Kind.INFER_RESPONSE if "kind" in flaws else Kind.INFER_REQUEST
    created_at = NOW - 3600 if "stale" in flaws else NOW
    event = sign_event(STRANGER if "signer" in flaws else CLIENT, kind, content, tags, created_at)
    if "id" in flaws:
        event = Event(**{**event.to_dict(), "id": "00" * 32})
    if "signature" in flaws:
        event = Event(**{**event.to_dict(), "sig": "11" * 64})
    return event


@given(flaws=st.sets(st.sampled_from([name for name, _ in ORDER])))
def test_several_flaws_report_the_first_in_check_order(flaws: set[str]) -> None:
    event = build(flaws)
    first = next((code for name, code in ORDER if name in flaws), None)
    kwargs = {"recipient": ROUTER.pubkey, "signers": {CLIENT.pubkey}, "reply_to": REQUEST_ID}
    assert code_of(event.to_json(), **kwargs) is first
    assert attempt(open_event, event, InferenceRequest, kinds=KINDS, now=NOW, **kwargs)[1] is first


@given(extra=st.integers(1, 64), limit=st.integers(0, DEFAULT_MAX_EVENT_BYTES))
def test_size_is_checked_before_anything_else(extra: int, limit: int) -> None:
    raw = build({"kind", "stale", "signature"}).to_json()
    assume(len(raw) + extra > 0)
    padded = raw + b" " * extra
    code = code_of(padded, max_bytes=limit)
    assert (code is ErrorCode.TOO_LARGE) == (len(padded) > limit)


@pytest.mark.parametrize("utf8_extra", ["é", "😀"])
def test_size_limit_counts_bytes_of_text_input(utf8_extra: str) -> None:
    raw = build(set()).to_json().decode()
    text = raw[:-1] + f',"x":"{utf8_extra * 10}"}}'
    assert code_of(text, max_bytes=len(text)) is ErrorCode.TOO_LARGE  # more bytes than characters
    assert code_of(text, max_bytes=len(text.encode())) is not ErrorCode.TOO_LARGE
