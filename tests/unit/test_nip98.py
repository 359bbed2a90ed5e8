"""fedai.protocol.nip98: every check of `verify_auth_header`, each failure a typed 401 naming the check."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, compute_id, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, MAX_HEADER_BYTES, auth_header, verify_auth_header

NOW = 1_700_000_000
URL = "https://router.example/v1/chat/completions"
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
KEYS = Keys.generate()


def header_for(event: Event | dict[str, Any]) -> str:
    raw = event.to_json() if isinstance(event, Event) else json.dumps(event).encode()
    return "Nostr " + base64.b64encode(raw).decode()


def signed(
    *,
    kind: int = KIND_HTTP_AUTH,
    url: str = URL,
    method: str = "POST",
    body: bytes | None = BODY,
    created_at: int = NOW,
    keys: Keys = KEYS,
) -> Event:
    tags = [["u", url], ["method", method]]
    if body is not None:
        tags.append(["payload", hashlib.sha256(body).hexdigest()])
    return sign_event(keys, kind, "", tags, created_at=created_at)


def verify(header: str, *, body: bytes = BODY, method: str = "POST", url: str = URL, window_s: int = 60) -> Event:
    return verify_auth_header(header, method=method, url=url, body=body, window_s=window_s, now=NOW)


def refused(header: str, **kwargs: Any) -> FedaiError:
    with pytest.raises(FedaiError) as info:
        verify(header, **kwargs)
    assert info.value.status == 401, "NIP-98: every failed check is a 401"
    return info.value


def test_a_valid_header_gives_the_signed_event() -> None:
    event = signed()
    assert verify(header_for(event)) == event


def test_the_builder_and_the_checker_agree() -> None:
    header = auth_header(KEYS, "post", URL, BODY)
    assert verify_auth_header(header, method="POST", url=URL, body=BODY).pubkey == KEYS.pubkey
    get = auth_header(KEYS, "GET", URL)
    assert verify_auth_header(get, method="GET", url=URL, body=b"").tag("payload") is None


def test_a_forged_signature_for_someone_elses_key_is_refused() -> None:
    victim, forger = Keys.generate(), Keys.generate()
    tags = [["u", URL], ["method", "POST"], ["payload", hashlib.sha256(BODY).hexdigest()]]
    digest = compute_id(victim.pubkey, NOW, KIND_HTTP_AUTH, tags, "")
    forged = Event(
        id=digest.hex(),
        pubkey=victim.pubkey,
        created_at=NOW,
        kind=KIND_HTTP_AUTH,
        tags=tags,
        content="",
        sig=forger.sign(digest).hex(),
    )
    assert refused(header_for(forged)).code is ErrorCode.INVALID_SIGNATURE


def test_an_id_that_does_not_match_the_content_is_refused() -> None:
    event = signed().to_dict()
    event["created_at"] = NOW + 1  # still fresh, but no longer what the id (and signature) cover
    assert refused(header_for(event)).code is ErrorCode.INVALID_AUTH


def test_another_kind_is_refused_even_when_signed_with_the_right_tags() -> None:
    err = refused(header_for(signed(kind=1)))
    assert err.code is ErrorCode.INVALID_AUTH and str(KIND_HTTP_AUTH) in err.message


def test_a_body_without_a_payload_tag_is_refused() -> None:
    err = refused(header_for(signed(body=None)))
    assert err.code is ErrorCode.AUTH_PAYLOAD_MISMATCH
    # without a body, no payload tag is needed
    assert verify(header_for(signed(body=None)), body=b"").pubkey == KEYS.pubkey


def test_a_payload_for_another_body_is_refused() -> None:
    assert refused(header_for(signed(body=b"other"))).code is ErrorCode.AUTH_PAYLOAD_MISMATCH


@pytest.mark.parametrize(
    "url",
    [
        "https://other-router.example/v1/chat/completions",  # captured by another router
        "https://router.example/v1/completions",  # another path
        "https://router.example/v1/chat/completions?x=1",  # another query
        "http://router.example/v1/chat/completions",  # another scheme
    ],
)
def test_another_url_is_refused_with_401(url: str) -> None:
    err = refused(header_for(signed(url=url)))
    assert err.code is ErrorCode.AUTH_URL_MISMATCH and URL in err.message


def test_another_method_is_refused() -> None:
    assert refused(header_for(signed(method="PUT"))).code is ErrorCode.AUTH_METHOD_MISMATCH


@pytest.mark.parametrize("offset", [-61, 61, -10_000])
def test_outside_the_window_on_either_side_is_stale(offset: int) -> None:
    assert refused(header_for(signed(created_at=NOW + offset))).code is ErrorCode.STALE


@pytest.mark.parametrize("offset", [-60, 60])
def test_the_window_edges_are_accepted(offset: int) -> None:
    assert verify(header_for(signed(created_at=NOW + offset))).created_at == NOW + offset


def test_a_wider_window_accepts_older_events() -> None:
    old = header_for(signed(created_at=NOW - 500))
    assert refused(old).code is ErrorCode.STALE
    assert verify(old, window_s=600).created_at == NOW - 500


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwdw==",
        "Nostr",
        "Nostr %%%not-base64%%%",
        "Nostr " + base64.b64encode(b"not json").decode(),
        "Nostr " + base64.b64encode(b'{"id": "x"}').decode(),
        "Nostr " + base64.b64encode(b"[" * 3000 + b"]" * 3000).decode(),  # under the size bound, deep enough to recurse
        "Nostr " + "A" * (MAX_HEADER_BYTES + 4),
    ],
    ids=["other-scheme", "empty", "not-base64", "not-json", "not-an-event", "deep-json", "too-large"],
)
def test_malformed_headers_are_invalid_auth(header: str) -> None:
    assert refused(header).code is ErrorCode.INVALID_AUTH


def test_two_headers_for_the_same_request_in_the_same_second_are_two_events() -> None:
    """Replay protection refuses an event id seen before: identical requests signed within one second (an SDK
    retrying, two identical chat requests) must not share one, or the second is refused as a replay."""
    first, second = (auth_header(KEYS, "POST", URL, BODY) for _ in range(2))
    events = [verify_auth_header(h, method="POST", url=URL, body=BODY) for h in (first, second)]
    assert events[0].id != events[1].id
    assert events[0].tag("nonce") != events[1].tag("nonce")
