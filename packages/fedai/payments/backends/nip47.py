"""NIP-47 (Nostr Wallet Connect) messages: kinds, error codes, encryption, and the request/response bodies.

Requests (kind 23194) and responses (kind 23195) are ephemeral events between the client's key and the wallet
service's key, their content encrypted for the other: NIP-44 v2 when the wallet service's info event (kind
13194) lists `nip44_v2` in its `encryption` tag, else NIP-04, which every wallet service speaks (the spec's
default when the tag is absent). Both ciphers are rust-nostr's (nostr-sdk).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.nip44 import decrypt as nip44_decrypt
from fedai.protocol.nip44 import encrypt as nip44_encrypt

INFO_KIND = 13194
REQUEST_KIND = 23194
RESPONSE_KIND = 23195
MAX_CONTENT = 64 * 1024  # characters of a response's ciphertext


class Encryption(StrEnum):
    NIP04 = "nip04"
    NIP44 = "nip44_v2"


# NIP-47's error codes, by what the caller can do about them: retry later (the wallet is there but cannot now,
# or will not answer this client), or take the no as final.
UNAVAILABLE_REASONS: dict[str, str] = {
    "RATE_LIMITED": "rate_limited",
    "INTERNAL": "backend_error",
    "UNAUTHORIZED": "unauthorized",
    "RESTRICTED": "unauthorized",  # this connection may not use the method
    "NOT_IMPLEMENTED": "not_implemented",
}
REFUSED_REASONS: dict[str, str] = {
    "INSUFFICIENT_BALANCE": "insufficient_balance",
    "QUOTA_EXCEEDED": "quota_exceeded",  # the connection's budget
    "NOT_FOUND": "unknown_invoice",
    "PAYMENT_FAILED": "payment_failed",
    "OTHER": "rejected",
}


class Nip47Error(Exception):
    """A message that cannot be read: it does not decrypt, or is not the JSON NIP-47 describes."""


def chosen_encryption(info_tags: list[list[str]] | None) -> Encryption:
    """NIP-44 v2 if the info event's `encryption` tag offers it, else NIP-04 (also when there is no info event)."""
    for tag in info_tags or []:
        if len(tag) >= 2 and tag[0] == "encryption" and Encryption.NIP44.value in tag[1].split():
            return Encryption.NIP44
    return Encryption.NIP04


def encrypt(keys: Keys, peer: str, plaintext: str, scheme: Encryption) -> str:
    if scheme is Encryption.NIP44:
        return nip44_encrypt(keys, peer, plaintext)
    import nostr_sdk as ns

    return str(ns.nip04_encrypt(ns.SecretKey.parse(keys.secret_hex), ns.PublicKey.parse(peer), plaintext))


def decrypt(keys: Keys, peer: str, ciphertext: str) -> str:
    """Open a NIP-04 (`…?iv=…`) or NIP-44 v2 content; `Nip47Error` if it does not open."""
    if len(ciphertext) > MAX_CONTENT:
        raise Nip47Error("content too long")
    if "?iv=" not in ciphertext:
        try:
            return nip44_decrypt(keys, peer, ciphertext)
        except FedaiError:
            raise Nip47Error("content does not decrypt (NIP-44)") from None
    import nostr_sdk as ns

    try:
        return str(ns.nip04_decrypt(ns.SecretKey.parse(keys.secret_hex), ns.PublicKey.parse(peer), ciphertext))
    except Exception:  # noqa: BLE001 - the binding raises its own error types; all mean "does not open"
        raise Nip47Error("content does not decrypt (NIP-04)") from None


def request_body(method: str, params: dict[str, Any]) -> str:
    return json.dumps({"method": method, "params": params}, separators=(",", ":"))


def parse_object(plaintext: str) -> dict[str, Any]:
    try:
        body = json.loads(plaintext)
    except ValueError:
        raise Nip47Error("content is not JSON") from None
    if not isinstance(body, dict):
        raise Nip47Error("content is not a JSON object")
    return body


def tag_value(tags: list[list[str]], name: str) -> str | None:
    return next((tag[1] for tag in tags if len(tag) >= 2 and tag[0] == name), None)
