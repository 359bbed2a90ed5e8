"""NIP-98 HTTP authorization: `Authorization: Nostr <base64 of a kind-27235 event>` whose `u` tag is the full
URL, `method` tag the HTTP method, and `payload` tag the sha256 of the body. Pure; replay is the caller's."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event, sign_event, verify_event
from fedai.protocol.keys import Keys

KIND_HTTP_AUTH = 27235
DEFAULT_WINDOW_S = 60
MAX_HEADER_BYTES = 8 * 1024


def auth_header(keys: Keys, method: str, url: str, body: bytes = b"") -> str:
    """The `Authorization` header value for one request."""
    tags = [["u", url], ["method", method.upper()]]
    if body:
        tags.append(["payload", hashlib.sha256(body).hexdigest()])
    event = sign_event(keys, KIND_HTTP_AUTH, "", tags)
    return "Nostr " + base64.b64encode(event.to_json()).decode()


def verify_auth_header(
    header: str, *, method: str, url: str, body: bytes, window_s: int = DEFAULT_WINDOW_S, now: float | None = None
) -> Event:
    """The verified authorization event, or a typed error saying what is wrong with it."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "nostr" or not token:
        raise FedaiError(ErrorCode.FORBIDDEN, "Authorization must be 'Nostr <base64 event>' or 'Bearer <api key>'")
    if len(token) > MAX_HEADER_BYTES:
        raise FedaiError(ErrorCode.TOO_LARGE, "authorization event too large")
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise FedaiError(ErrorCode.INVALID_EVENT, "authorization is not valid base64") from None
    event = decode_event(raw, MAX_HEADER_BYTES)
    if event.kind != KIND_HTTP_AUTH:
        raise FedaiError(ErrorCode.INVALID_EVENT, f"authorization event must be kind {KIND_HTTP_AUTH}")
    current = time.time() if now is None else now
    if abs(current - event.created_at) > window_s:
        raise FedaiError(ErrorCode.STALE, f"authorization created_at is more than {window_s}s from the server's clock")
    if event.tag("u") != url:
        raise FedaiError(ErrorCode.FORBIDDEN, "authorization is for another URL")
    if (event.tag("method") or "").upper() != method.upper():
        raise FedaiError(ErrorCode.FORBIDDEN, "authorization is for another HTTP method")
    payload = event.tag("payload")
    if body and payload is None:
        raise FedaiError(ErrorCode.FORBIDDEN, "authorization must carry the body's sha256 in a payload tag")
    if payload is not None and payload != hashlib.sha256(body).hexdigest():
        raise FedaiError(ErrorCode.FORBIDDEN, "authorization payload hash does not match the body")
    verify_event(event)
    return event
