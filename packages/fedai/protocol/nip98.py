"""NIP-98 HTTP authorization: `Authorization: Nostr <base64 of a kind-27235 event>` whose `u` tag is the full
URL, `method` tag the HTTP method, and `payload` tag the sha256 of the body. Pure; replay is the caller's."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event, sign_event, verify_event
from fedai.protocol.keys import Keys

KIND_HTTP_AUTH = 27235
DEFAULT_WINDOW_S = 60
MAX_HEADER_BYTES = 8 * 1024


def auth_header(keys: Keys, method: str, url: str, body: bytes = b"", *, nonce: bool = True) -> str:
    """The `Authorization` header value for one request. A random `nonce` tag (on unless `nonce=False`) makes
    each header a new event: replay protection refuses an event id seen before, and two identical requests
    signed within the same second would otherwise be one event (verifiers ignore tags they do not know)."""
    tags = [["u", url], ["method", method.upper()]]
    if body:
        tags.append(["payload", hashlib.sha256(body).hexdigest()])
    if nonce:
        tags.append(["nonce", secrets.token_hex(8)])
    event = sign_event(keys, KIND_HTTP_AUTH, "", tags)
    return "Nostr " + base64.b64encode(event.to_json()).decode()


def _decode_header(header: str) -> Event:
    """The kind-27235 event a `Nostr <base64>` header carries: scheme, size, base64, schema and kind, else
    `invalid_auth`. Its time, bindings and signature are the caller's to check."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "nostr" or not token:
        raise FedaiError(ErrorCode.INVALID_AUTH, "Authorization must be 'Nostr <base64 event>' or 'Bearer <api key>'")
    if len(token) > MAX_HEADER_BYTES:
        raise FedaiError(ErrorCode.INVALID_AUTH, f"authorization event larger than {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise FedaiError(ErrorCode.INVALID_AUTH, "authorization is not valid base64") from None
    try:
        event = decode_event(raw, MAX_HEADER_BYTES)
    except FedaiError as err:
        raise FedaiError(ErrorCode.INVALID_AUTH, f"authorization is not an event: {err.message}") from None
    if event.kind != KIND_HTTP_AUTH:
        raise FedaiError(ErrorCode.INVALID_AUTH, f"authorization event must be kind {KIND_HTTP_AUTH}")
    return event


def _check_payload(event: Event, body: bytes) -> None:
    """A request with a body must carry its sha256 in a `payload` tag; a tag present must match the body."""
    payload = event.tag("payload")
    if body and payload is None:
        raise FedaiError(ErrorCode.AUTH_PAYLOAD_MISMATCH, "authorization must carry the body's sha256 in a payload tag")
    if payload is not None and payload != hashlib.sha256(body).hexdigest():
        raise FedaiError(ErrorCode.AUTH_PAYLOAD_MISMATCH, "authorization payload hash does not match the body")


def verify_auth_header(
    header: str, *, method: str, url: str, body: bytes, window_s: int = DEFAULT_WINDOW_S, now: float | None = None
) -> Event:
    """The verified authorization event, or a typed 401 saying which check failed (NIP-98 answers every failed
    check with 401): `invalid_auth`, `stale`, `auth_url_mismatch`, `auth_method_mismatch`,
    `auth_payload_mismatch` or `invalid_signature`. The event stays acceptable for `window_s` on either side of
    its `created_at`: a caller's replay memory must keep its id at least that long."""
    event = _decode_header(header)
    current = time.time() if now is None else now
    if abs(current - event.created_at) > window_s:
        raise FedaiError(ErrorCode.STALE, f"authorization created_at is more than {window_s}s from the server's clock")
    if event.tag("u") != url:
        raise FedaiError(ErrorCode.AUTH_URL_MISMATCH, f"authorization is for another URL (this is {url})")
    if (event.tag("method") or "").upper() != method.upper():
        raise FedaiError(ErrorCode.AUTH_METHOD_MISMATCH, f"authorization is for another HTTP method (this is {method})")
    _check_payload(event, body)
    try:
        verify_event(event)
    except FedaiError as err:
        if err.code is ErrorCode.INVALID_SIGNATURE:
            raise
        raise FedaiError(ErrorCode.INVALID_AUTH, f"authorization event: {err.message}") from None
    return event
