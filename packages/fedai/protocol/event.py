"""NIP-01 events: canonical serialization, id, signing and verification."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.jsonguard import check_depth
from fedai.protocol.keys import Keys, schnorr_verify

Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
Hex128 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{128}\Z")]

DEFAULT_MAX_EVENT_BYTES = 256 * 1024


class Event(msgspec.Struct, frozen=True):
    """A signed Nostr event exactly as NIP-01 puts it on the wire."""

    id: Hex64
    pubkey: Hex64
    created_at: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    kind: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    tags: list[list[str]]
    content: str
    sig: Hex128

    def tag(self, name: str) -> str | None:
        """Value of the first tag called `name`, if any."""
        for t in self.tags:
            if len(t) >= 2 and t[0] == name:
                return t[1]
        return None

    def tag_values(self, name: str) -> list[str]:
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]

    def to_json(self) -> bytes:
        return _encode(self)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode
_convert = msgspec.convert


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    """The NIP-01 bytes whose sha256 is the event id: compact JSON, UTF-8, no extra whitespace."""
    return _encode([0, pubkey, created_at, kind, tags, content])


def compute_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    return hashlib.sha256(serialize_for_id(pubkey, created_at, kind, tags, content)).digest()


def sign_event(
    keys: Keys,
    kind: int,
    content: str,
    tags: Iterable[Sequence[str]] = (),
    created_at: int | None = None,
) -> Event:
    """Build and sign an event with `keys`."""
    tag_list = [list(t) for t in tags]
    ts = int(time.time()) if created_at is None else created_at
    digest = compute_id(keys.pubkey, ts, kind, tag_list, content)
    return Event(
        id=digest.hex(),
        pubkey=keys.pubkey,
        created_at=ts,
        kind=kind,
        tags=tag_list,
        content=content,
        sig=keys.sign(digest).hex(),
    )


def verify_event(event: Event) -> None:
    """Recompute the id and compare, then check the BIP-340 signature over it. Raises a typed error."""
    digest = compute_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    if digest.hex() != event.id:
        raise FedaiError(ErrorCode.INVALID_EVENT, "event id does not match its content")
    if not schnorr_verify(event.pubkey, event.sig, digest):
        raise FedaiError(ErrorCode.INVALID_SIGNATURE, "signature does not verify for the event's pubkey")


def is_valid(event: Event) -> bool:
    try:
        verify_event(event)
    except FedaiError:
        return False
    return True


def decode_event(raw: bytes | str | msgspec.Raw, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Parse an event from JSON, checking the size and nesting depth before parsing and the schema while parsing.

    Does not verify the id or signature: call `verify_event` (or use `fedai.protocol.envelope.open_envelope`).
    """
    size = len(raw)
    if isinstance(raw, str) and size <= max_bytes:
        size = len(raw.encode("utf-8", "surrogatepass"))  # the limit is in bytes, not characters
    if size > max_bytes:
        raise FedaiError(ErrorCode.TOO_LARGE, f"event is {size} bytes, limit is {max_bytes}")
    check_depth(raw)  # the parsers recurse per level: refuse [[[[…]]]] before it reaches them
    try:
        return _decode_event(raw)
    except msgspec.ValidationError as exc:
        if not _is_json(raw):  # the typed decoder can hit a schema error before a syntax error
            raise FedaiError(ErrorCode.INVALID_JSON, "body is not valid JSON") from None
        raise FedaiError(ErrorCode.INVALID_EVENT, f"not a NIP-01 event: {exc}") from None
    except (msgspec.DecodeError, UnicodeError):  # msgspec raises UnicodeError for invalid UTF-8 / surrogates
        raise FedaiError(ErrorCode.INVALID_JSON, "body is not valid JSON") from None


def _is_json(raw: bytes | str | msgspec.Raw) -> bool:
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeError):
        return False
    return True


def event_from_obj(obj: Any) -> Event:
    """Convert an already-parsed JSON object (e.g. an event nested in another payload) to an Event."""
    try:
        return _convert(obj, Event)
    except msgspec.ValidationError as exc:
        raise FedaiError(ErrorCode.INVALID_EVENT, f"not a NIP-01 event: {exc}") from None
