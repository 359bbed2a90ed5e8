"""Guards for untrusted JSON, checked before any parser sees it: a nesting bound, and no NUL characters.

msgspec and the standard `json` module both recurse once per nested array or object, so `[[[[…]]]]` a few
thousand levels deep raises `RecursionError` from inside the parser, even from a typed decoder skipping an
unknown field or from `msgspec.Raw`. Nothing in the protocol nests deeper than a handful of levels, so input
nested deeper than `MAX_JSON_DEPTH` is refused up front. The check is linear in the input: a byte count
decides almost every message at once; otherwise strings are cut out (one regular expression pass) and the
running depth of the remaining brackets is summed.

U+0000 is refused in every string: PostgreSQL's `text` and `jsonb` cannot hold it, so a NUL in a tag, a
model name or a prompt would otherwise fail a write after the work was done (a 500 for the sender, and for
a batched write, for everyone in the batch). In JSON it can only appear escaped (`\u0000`); the check is a
substring search, and a precise one (the escape not itself escaped) only when that finds something. Pure.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError

# Events nest 3 levels (object, tags, tag), a relay frame 4, payloads and OpenAI bodies (tool schemas
# included) rarely above 10. A protocol constant rather than a setting: every party must agree on it.
MAX_JSON_DEPTH = 64

# A JSON string, or an unterminated one running to the end of the input (invalid JSON either way; matching it
# keeps the scan linear instead of retrying at every escaped quote). Possessive: no backtracking.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
# Opening brackets become +1, closing ones -1 (as signed bytes); everything else is deleted.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[{]}")

# `\u0000` preceded by an even number of backslashes: an escaped NUL, not the text "\u0000" written out.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

_decode_any = msgspec.json.Decoder().decode


def _as_bytes(raw: bytes | bytearray | memoryview | str | msgspec.Raw) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return bytes(memoryview(raw))


def too_deep(raw: bytes | bytearray | memoryview | str | msgspec.Raw, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if `raw` nests arrays/objects more than `limit` levels deep (brackets inside strings don't count)."""
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= limit:
            return False
    else:
        data = _as_bytes(raw)
        if data.count(b"[") + data.count(b"{") <= limit:  # the usual case: too few brackets to matter
            return False
    structure = _STRING.sub(b"", _as_bytes(raw)).translate(_STEPS, _NOT_BRACKET)
    if structure.count(1) <= limit:
        return False
    return max(accumulate(memoryview(structure).cast("b")), default=0) > limit


def check_depth(raw: bytes | str | msgspec.Raw, code: ErrorCode = ErrorCode.INVALID_JSON, what: str = "JSON") -> None:
    """Raise a typed error (`invalid_json` by default, 400) if `raw` nests deeper than `MAX_JSON_DEPTH`."""
    if too_deep(raw):
        raise FedaiError(code, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")


def has_nul(raw: bytes | bytearray | memoryview | str | msgspec.Raw) -> bool:
    """True if a JSON string in `raw` holds U+0000 (escaped, as JSON must write it, or as a raw byte)."""
    data = _as_bytes(raw)
    if b"\\u0000" not in data:
        return b"\x00" in data
    return _NUL_ESCAPE.search(data) is not None or b"\x00" in data


def check_json(raw: bytes | str | msgspec.Raw, code: ErrorCode = ErrorCode.INVALID_JSON, what: str = "JSON") -> None:
    """Raise a typed error (`invalid_json` by default, 400) if `raw` nests deeper than `MAX_JSON_DEPTH` or holds
    a NUL character."""
    check_depth(raw, code, what)
    if has_nul(raw):
        raise FedaiError(code, f"{what} holds a NUL character (U+0000), which is not accepted")


def decode_json(raw: bytes | str) -> Any:
    """Untyped JSON from an untrusted source: guarded first; anything wrong is `invalid_json` (400)."""
    check_json(raw)
    try:
        return _decode_any(raw)
    except (msgspec.DecodeError, UnicodeError):
        raise FedaiError(ErrorCode.INVALID_JSON, "body is not valid JSON") from None
