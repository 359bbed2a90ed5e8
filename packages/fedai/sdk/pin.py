"""The router's key: the one its `/health` names, and the check of a pinned key against it when the router
refuses a request sealed to the pin (`wrong_recipient`): a wrong pin then raises `RouterKeyMismatch`."""

from __future__ import annotations

from typing import Any

from fedai.protocol.errors import ErrorCode, KeyFormatError
from fedai.protocol.keys import parse_pubkey
from fedai.sdk.errors import FedaiClientError, RouterError, RouterKeyMismatch, UnexpectedResponse


def health_pubkey(document: dict[str, Any]) -> str:
    """The key a router's decoded `/health` names (hex); `UnexpectedResponse` if it names no valid key."""
    try:
        return parse_pubkey(str(document["pubkey"]))
    except (KeyError, KeyFormatError):
        raise UnexpectedResponse("router's /health names no valid pubkey", http_status=200) from None


def refused_for_pin(err: FedaiClientError) -> bool:
    """The refusal a wrong pin causes: the request was sealed to a key that is not the router's."""
    return isinstance(err, RouterError) and err.code == ErrorCode.WRONG_RECIPIENT


def check_pin(pinned: str, health: dict[str, Any]) -> None:
    """Raise `RouterKeyMismatch` if `/health` names a key other than `pinned`; nothing if it names none (the
    router's own refusal then stands)."""
    try:
        actual = health_pubkey(health)
    except UnexpectedResponse:
        return
    if actual != pinned:
        raise RouterKeyMismatch(pinned, actual)
