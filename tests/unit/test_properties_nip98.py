"""Properties of NIP-98 header checks (`verify_auth_header`): any header is accepted or refused with a
`FedaiError`, never another exception; a header is accepted exactly for the method, URL and body it signed,
within the window, and no byte mutation of it is accepted as a different event."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, MAX_HEADER_BYTES, auth_header, verify_auth_header
from tests.support.strategies import any_text, attempt, byte_mutations

KEYS = Keys(bytes([5]) * 32)
URLS = ["https://router.example/v1/infer", "https://router.example/v1/infer?x=1", "https://other.example/v1/infer"]
METHODS = ["GET", "POST", "post", "DELETE"]
# every NIP-98 refusal is a 401 with its own code (docs/security.md, "The edge")
REFUSALS = {
    ErrorCode.INVALID_AUTH,
    ErrorCode.STALE,
    ErrorCode.INVALID_SIGNATURE,
    ErrorCode.AUTH_URL_MISMATCH,
    ErrorCode.AUTH_METHOD_MISMATCH,
    ErrorCode.AUTH_PAYLOAD_MISMATCH,
}


def check(header: str, method: str = "POST", url: str = URLS[0], body: bytes = b"", **kw: Any) -> Event | None:
    event, code = attempt(verify_auth_header, header, method=method, url=url, body=body, **kw)
    assert code is None or code in REFUSALS, f"unexpected code {code}"
    return event  # type: ignore[no-any-return]


def header_of(event: Event) -> str:
    return "Nostr " + base64.b64encode(event.to_json()).decode()


@given(header=any_text | st.binary(max_size=200).map(lambda b: "Nostr " + base64.b64encode(b).decode()))
@example(header="Nostr")
@example(header="nostr " + "A" * (MAX_HEADER_BYTES + 4))
@example(header="Nostr ####")
@example(header="Bearer abc")
def test_arbitrary_headers_are_refused_with_a_typed_error(header: str) -> None:
    assert check(header) is None


@pytest.mark.parametrize("header", ["Nostr", "Nostr ", "  nostr  ", "Bearer", "Basic abc", ""])
def test_a_header_without_a_nostr_token_is_an_authorization_refusal(header: str) -> None:
    """Refused as an authorization problem (401 `invalid_auth`), not a parse error."""
    assert attempt(verify_auth_header, header, method="GET", url=URLS[0], body=b"")[1] is ErrorCode.INVALID_AUTH


@given(data=st.data())
def test_a_token_with_a_character_outside_base64_is_refused(data: st.DataObject) -> None:
    token = auth_header(KEYS, "GET", URLS[0]).removeprefix("Nostr ")
    position = data.draw(st.integers(0, len(token)), label="position")
    junk = data.draw(st.sampled_from(["!", "*", "\n", " ", ".", "-", "_", "\x00", "é"]), label="junk")
    assert check("Nostr " + token[:position] + junk + token[position:], "GET") is None


def test_the_token_size_limit_is_inclusive() -> None:
    event = sign_event(KEYS, KIND_HTTP_AUTH, "", [["u", URLS[0]], ["method", "GET"]])
    raw = event.to_json()
    at_limit = raw[:-1] + b" " * (MAX_HEADER_BYTES * 3 // 4 - len(raw)) + b"}"  # 8 KiB of base64 exactly
    token = base64.b64encode(at_limit).decode()
    assert len(token) == MAX_HEADER_BYTES
    assert check("Nostr " + token, "GET") == event
    over = base64.b64encode(at_limit + b"   ").decode()
    assert (
        attempt(verify_auth_header, "Nostr " + over, method="GET", url=URLS[0], body=b"")[1] is ErrorCode.INVALID_AUTH
    )


@given(
    signed=st.tuples(st.sampled_from(METHODS), st.sampled_from(URLS), st.binary(max_size=16)),
    asked=st.tuples(st.sampled_from(METHODS), st.sampled_from(URLS), st.binary(max_size=16)),
)
@example(signed=("POST", URLS[0], b""), asked=("POST", URLS[0], b"body"))  # body sent, no payload tag
@example(signed=("POST", URLS[0], b"body"), asked=("POST", URLS[0], b""))
@example(signed=("post", URLS[0], b"x"), asked=("POST", URLS[0], b"x"))
def test_a_header_is_accepted_exactly_for_what_it_signed(
    signed: tuple[str, str, bytes], asked: tuple[str, str, bytes]
) -> None:
    header = auth_header(KEYS, *signed)
    event = check(header, *asked)
    same = signed[0].upper() == asked[0].upper() and signed[1:] == asked[1:]
    assert (event is not None) == same
    if event is not None:
        assert event.pubkey == KEYS.pubkey


@given(offset=st.integers(-200, 200), window=st.integers(0, 120))
def test_the_window_is_exact(offset: int, window: int) -> None:
    now = 1_700_000_000
    event = sign_event(KEYS, KIND_HTTP_AUTH, "", [["u", URLS[0]], ["method", "GET"]], now + offset)
    assert (check(header_of(event), "GET", window_s=window, now=now) is not None) == (abs(offset) <= window)


@given(kind=st.integers(0, 65535).filter(lambda k: k != KIND_HTTP_AUTH))
def test_other_kinds_are_refused(kind: int) -> None:
    event = sign_event(KEYS, kind, "", [["u", URLS[0]], ["method", "GET"]])
    assert check(header_of(event), "GET") is None


@given(data=st.data())
def test_no_mutation_of_the_event_is_accepted_as_a_different_event(data: st.DataObject) -> None:
    body = b'{"model":"m"}'
    event = sign_event(
        KEYS, KIND_HTTP_AUTH, "", [["u", URLS[0]], ["method", "POST"], ["payload", hashlib.sha256(body).hexdigest()]]
    )
    mutated = data.draw(byte_mutations(event.to_json()))
    accepted = check("Nostr " + base64.b64encode(mutated).decode(), "POST", URLS[0], body)
    assert accepted is None or accepted == event


@pytest.mark.parametrize("field", ["sig", "pubkey"])
def test_a_forged_header_for_another_key_is_refused(field: str) -> None:
    """A header claiming someone else's pubkey (or carrying someone else's signature) never verifies."""
    mine = sign_event(KEYS, KIND_HTTP_AUTH, "", [["u", URLS[0]], ["method", "GET"]], int(time.time()))
    theirs = sign_event(Keys(bytes([6]) * 32), KIND_HTTP_AUTH, "", mine.tags, mine.created_at)
    forged = Event(**{**mine.to_dict(), field: getattr(theirs, field)})
    assert check(header_of(forged), "GET") is None
