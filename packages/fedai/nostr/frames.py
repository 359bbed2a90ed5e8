"""Relay messages on the wire: encode ours, decode theirs one element at a time, shorten reasons for logs.

A relay message is a JSON array (`["EVENT", <subscription id>, <event>]`, `["OK", <event id>, <bool>, <reason>]`,
...). It is decoded into raw elements first, so each element is checked against the type it must have and an
event is parsed only once its subscription is known.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

MESSAGE_OVERHEAD = 1024  # bytes allowed around an event in ["EVENT", <subscription id>, <event>]
REASON_LOG_LEN = 200

Frame = list[msgspec.Raw]

encode = msgspec.json.Encoder().encode
decode_frame = msgspec.json.Decoder(Frame).decode
_T = TypeVar("_T")


class Malformed(Exception):
    """A relay message that is not a JSON array of the expected shape."""


def element(frame: Frame, index: int, typ: type[_T]) -> _T:
    """Decode element `index` of a relay message as `typ`, or raise `Malformed`."""
    if index >= len(frame):
        raise Malformed(f"missing element {index}")
    try:
        return msgspec.json.decode(frame[index], type=typ)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise Malformed(str(exc)) from None


def short(reason: str) -> str:
    """A relay-supplied reason, truncated for a log line."""
    return reason if len(reason) <= REASON_LOG_LEN else reason[:REASON_LOG_LEN] + "…"


def is_auth_required(reason: str) -> bool:
    """An OK or CLOSED reason asking for NIP-42 authentication first."""
    return reason.startswith("auth-required:")
