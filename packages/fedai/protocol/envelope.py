"""Envelopes are events: `seal` builds one, `open_envelope` applies every check (docs/decisions.md#one-envelope).

Checks run cheapest first: size before parsing, schema, kind, freshness, expiration, recipient, signer,
id and signature, `e` binding, payload schema. Replay is the caller's last, async step (`claim_or_raise`)
so an envelope refused for any other reason never consumes its id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import DEFAULT_MAX_EVENT_BYTES, Event, decode_event, sign_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import Payload, decode_payload, encode_payload

DEFAULT_CLOCK_SKEW_S = 60

P = TypeVar("P", bound=Payload)


def new_nonce() -> str:
    return os.urandom(16).hex()


def seal(
    keys: Keys,
    kind: int,
    payload: Payload | str,
    *,
    to: str | None = None,
    reply_to: str | None = None,
    nonce: bool = False,
    expiration: int | None = None,
    extra_tags: Iterable[Sequence[str]] = (),
    created_at: int | None = None,
) -> Event:
    """Sign `payload` as `kind`: addressed with `p`, bound with `e`, optional nonce and NIP-40 expiry."""
    tags: list[list[str]] = []
    if to is not None:
        tags.append(["p", to])
    if reply_to is not None:
        tags.append(["e", reply_to])
    if nonce:
        tags.append(["nonce", new_nonce()])
    if expiration is not None:
        tags.append(["expiration", str(expiration)])
    tags.extend(list(t) for t in extra_tags)
    content = payload if isinstance(payload, str) else encode_payload(payload)
    return sign_event(keys, kind, content, tags, created_at)


@dataclass(frozen=True, slots=True)
class Opened(Generic[P]):
    event: Event
    payload: P


def check_event(
    event: Event,
    *,
    kinds: Collection[int],
    recipient: str | None = None,
    signers: Collection[str] | None = None,
    reply_to: str | None = None,
    skew_s: int | None = DEFAULT_CLOCK_SKEW_S,
    now: float | None = None,
) -> None:
    """Every envelope rule except size, parsing and replay, for an event already decoded.

    `skew_s=None` skips the freshness check (for verifying an archived chain later); expiry still applies
    relative to `now`.
    """
    if event.kind not in kinds:
        raise FedaiError(ErrorCode.INVALID_EVENT, f"kind {event.kind} is not accepted here")
    if any("\x00" in value for tag in event.tags for value in tag):  # NIP-01 allows it; PostgreSQL cannot store it
        raise FedaiError(ErrorCode.INVALID_EVENT, "a tag holds a NUL character (U+0000), which is not accepted")
    _check_time(event, skew_s, time.time() if now is None else now)
    if recipient is not None:
        addressed = event.tag_values("p")
        if addressed != [recipient]:
            raise FedaiError(ErrorCode.WRONG_RECIPIENT, "envelope is not addressed to this receiver")
    if signers is not None and event.pubkey not in signers:
        raise FedaiError(ErrorCode.FORBIDDEN, "signer is not allowed here")
    verify_event(event)
    if reply_to is not None and event.tag_values("e") != [reply_to]:
        raise FedaiError(ErrorCode.INVALID_EVENT, "envelope is not bound (e tag) to the request it answers")


def _check_time(event: Event, skew_s: int | None, now: float) -> None:
    """Fresh (`created_at` within `skew_s` of `now`, unless `skew_s` is None) and not past its NIP-40 expiration."""
    if skew_s is not None and abs(now - event.created_at) > skew_s:
        raise FedaiError(ErrorCode.STALE, f"created_at is more than {skew_s}s from the receiver's clock")
    expiration = event.tag("expiration")
    if expiration is not None:
        try:
            expires = int(expiration)
        except ValueError:
            raise FedaiError(ErrorCode.INVALID_EVENT, "expiration tag is not an integer") from None
        if expires <= now:
            raise FedaiError(ErrorCode.EXPIRED, "envelope expired")


def open_envelope(
    raw: bytes | str,
    cls: type[P],
    *,
    kinds: Collection[int],
    recipient: str | None = None,
    signers: Collection[str] | None = None,
    reply_to: str | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    skew_s: int | None = DEFAULT_CLOCK_SKEW_S,
    now: float | None = None,
) -> Opened[P]:
    """Parse and check an envelope and decode its payload as `cls`. Raises `FedaiError` with the code."""
    event = decode_event(raw, max_bytes)
    check_event(event, kinds=kinds, recipient=recipient, signers=signers, reply_to=reply_to, skew_s=skew_s, now=now)
    return Opened(event, decode_payload(event.content, cls))


def open_event(
    event: Event,
    cls: type[P],
    *,
    kinds: Collection[int],
    recipient: str | None = None,
    signers: Collection[str] | None = None,
    reply_to: str | None = None,
    skew_s: int | None = DEFAULT_CLOCK_SKEW_S,
    now: float | None = None,
) -> Opened[P]:
    """As `open_envelope`, for an event already decoded (e.g. nested inside another payload)."""
    check_event(event, kinds=kinds, recipient=recipient, signers=signers, reply_to=reply_to, skew_s=skew_s, now=now)
    return Opened(event, decode_payload(event.content, cls))


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Opened", "check_event", "open_envelope", "open_event", "seal"]
