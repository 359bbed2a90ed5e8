"""Hypothesis strategies for the property tests (tests/unit/test_properties_*.py) and their settings profile.

The default profile keeps the unit suite fast and reproducible (derandomized, modest example counts, no example
database written to disk); `FEDAI_HYPOTHESIS_PROFILE=thorough` explores many more random examples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fedai.protocol import federation, messages
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event

settings.register_profile(
    "fedai",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FEDAI_HYPOTHESIS_PROFILE", "fedai"))

NO_SURROGATES: list[Literal["Cs"]] = ["Cs"]
# Any Unicode code point, lone surrogates included: what a hostile peer can put in a Python str.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
# Text that can be UTF-8 encoded (what a valid event can carry): no lone surrogates.
utf8_text = st.text(st.characters(exclude_categories=NO_SURROGATES), max_size=40)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond int64 too
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(utf8_text, inner, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON bytes of `value` (stdlib: it writes integers of any size, as a hostile peer can)."""
    return json.dumps(value, ensure_ascii=False).encode()


def hex_string(n: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=n // 2, max_size=n // 2).map(bytes.hex)


# An object shaped like an event: the seven NIP-01 keys, each well-typed or arbitrary, some possibly missing.
event_like: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "id": hex_string(64) | json_values,
        "pubkey": hex_string(64) | json_values,
        "created_at": st.integers(min_value=-(2**64), max_value=2**64) | json_values,
        "kind": st.integers(min_value=-10, max_value=70_000) | json_values,
        "tags": st.lists(st.lists(utf8_text, max_size=3), max_size=3) | json_values,
        "content": utf8_text | json_values,
        "sig": hex_string(128) | json_values,
    },
)


def payload_classes() -> list[type[messages.Payload]]:
    """Every concrete payload class of `fedai.protocol.messages` and `fedai.protocol.federation`."""
    found: list[type[messages.Payload]] = []
    for module in (messages, federation):
        for value in vars(module).values():
            is_payload = isinstance(value, type) and issubclass(value, messages.Payload)
            if is_payload and value is not messages.Payload and value.__module__ == module.__name__:
                found.append(value)
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


def _bounded_int(t: mi.IntType) -> st.SearchStrategy[int]:
    lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
    hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
    return st.integers(min_value=lo, max_value=hi)


def _bounded_float(t: mi.FloatType) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=t.ge if t.ge is not None else t.gt,
        max_value=t.le if t.le is not None else t.lt,
        exclude_min=t.gt is not None,
        exclude_max=t.lt is not None,
        allow_nan=False,
        allow_infinity=False,
    )


HEX_PATTERNS = {r"^[0-9a-f]{32}\Z": 32, r"^[0-9a-f]{64}\Z": 64, r"^[0-9a-f]{128}\Z": 128}


def _string(t: mi.StrType) -> st.SearchStrategy[str]:
    if t.pattern in HEX_PATTERNS:  # keys, ids, hashes: bytes as hex take far less of Hypothesis's buffer than a regex
        return hex_string(HEX_PATTERNS[t.pattern])
    if t.pattern is not None:  # NIP-01 style anchors; generate the strict form (no trailing newline)
        return st.from_regex(t.pattern.removeprefix("^").removesuffix("$"), fullmatch=True)
    return st.text(
        st.characters(exclude_categories=NO_SURROGATES),
        min_size=t.min_length or 0,
        max_size=min(t.max_length or 20, 20),
    )


def _list(t: mi.ListType) -> st.SearchStrategy[list[Any]]:
    return st.lists(valid_json(t.item_type), min_size=t.min_length or 0, max_size=min(t.max_length or 3, 3))


def _dict(t: mi.DictType) -> st.SearchStrategy[dict[Any, Any]]:
    return st.dictionaries(
        valid_json(t.key_type),
        valid_json(t.value_type),
        min_size=t.min_length or 0,
        max_size=min(t.max_length or 3, 3),
    )


def _struct(t: mi.StructType) -> st.SearchStrategy[dict[str, Any]]:
    required = {f.encode_name: valid_json(f.type) for f in t.fields if f.required}
    optional = {f.encode_name: valid_json(f.type) for f in t.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


_BUILDERS: dict[type[mi.Type], Callable[[Any], st.SearchStrategy[Any]]] = {
    mi.IntType: _bounded_int,
    mi.FloatType: _bounded_float,
    mi.StrType: _string,
    mi.BoolType: lambda _t: st.booleans(),
    mi.NoneType: lambda _t: st.none(),
    mi.LiteralType: lambda t: st.sampled_from(t.values),
    mi.ListType: _list,
    mi.DictType: _dict,
    mi.UnionType: lambda t: st.one_of([valid_json(u) for u in t.types]),
    mi.StructType: _struct,
}


def valid_json(t: mi.Type) -> st.SearchStrategy[Any]:
    """JSON builtins that satisfy the schema `t` (from `msgspec.inspect.type_info`), constraints included.

    Cross-field rules (`__post_init__`) are not modelled: a value may still be refused by them.
    """
    builder = _BUILDERS.get(type(t))
    if builder is None:
        raise NotImplementedError(f"no strategy for schema type {t!r}: add one to tests/support/strategies.py")
    return builder(t)


def schema_json(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects valid for payload class `cls` field by field."""
    return valid_json(mi.type_info(cls))


def field_names(cls: type[Any]) -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


def event_dict(event: Event) -> dict[str, Any]:
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def byte_mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    """`raw` with one or a few bytes flipped, inserted, deleted, or the tail cut off."""
    n = len(raw)
    position = st.integers(min_value=0, max_value=max(n - 1, 0))
    flipped = st.tuples(position, st.integers(1, 255)).map(lambda pb: _xor(raw, pb[0], pb[1]))
    inserted = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=4)).map(
        lambda pb: raw[: pb[0]] + pb[1] + raw[pb[0] :]
    )
    deleted = st.tuples(position, st.integers(1, 4)).map(lambda pl: raw[: pl[0]] + raw[pl[0] + pl[1] :])
    truncated = position.map(lambda p: raw[:p])
    return flipped | inserted | deleted | truncated


def _xor(raw: bytes, position: int, mask: int) -> bytes:
    out = bytearray(raw)
    out[position] ^= mask
    return bytes(out)


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ErrorCode | None]:
    """(result, None) if `fn` returns, (None, code) if it raises `FedaiError`; any other exception propagates."""
    try:
        return fn(*args, **kwargs), None
    except FedaiError as err:
        return None, err.code
