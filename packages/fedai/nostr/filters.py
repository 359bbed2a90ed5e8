"""NIP-01 subscription filters: build them with keyword arguments and match events against them locally."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fedai.protocol.event import Event


def _values(name: str, value: str | Iterable[str]) -> list[str]:
    """A list of strings; a lone string counts as one value (never split into characters)."""
    if isinstance(value, str):
        return [value]
    values = list(value)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{name}: every value must be a string")
    return values


def build_filter(
    kinds: Iterable[int] | None = None,
    authors: str | Iterable[str] | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int | None = None,
    *,
    ids: str | Iterable[str] | None = None,
    **tags: str | Iterable[str],
) -> dict[str, Any]:
    """A NIP-01 filter dict. Tag filters are single letters given by name: `build_filter(kinds=[31023], d=["x"])`
    gives `{"kinds": [31023], "#d": ["x"]}`. Arguments left as None are omitted."""
    flt: dict[str, Any] = {}
    if ids is not None:
        flt["ids"] = _values("ids", ids)
    if authors is not None:
        flt["authors"] = _values("authors", authors)
    if kinds is not None:
        flt["kinds"] = [int(k) for k in kinds]
    for name, value in tags.items():
        if len(name) != 1 or not name.isascii() or not name.isalpha():
            raise ValueError(f"tag filters are single letters (a-z, A-Z), got {name!r}")
        flt["#" + name] = _values(name, value)
    if since is not None:
        flt["since"] = int(since)
    if until is not None:
        flt["until"] = int(until)
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        flt["limit"] = int(limit)
    return flt


def _tag_matches(event: Event, name: str, wanted: Iterable[Any]) -> bool:
    allowed = set(wanted)
    return any(len(t) >= 2 and t[0] == name and t[1] in allowed for t in event.tags)


def matches(flt: Mapping[str, Any], event: Event) -> bool:
    """NIP-01 matching: every condition present must hold; a list condition holds when any value matches.

    `limit` only shapes a relay's initial query and is ignored here, as are keys this module does not know.
    """
    if "ids" in flt and event.id not in flt["ids"]:
        return False
    if "authors" in flt and event.pubkey not in flt["authors"]:
        return False
    if "kinds" in flt and event.kind not in flt["kinds"]:
        return False
    if "since" in flt and event.created_at < flt["since"]:
        return False
    if "until" in flt and event.created_at > flt["until"]:
        return False
    for key, wanted in flt.items():
        if key.startswith("#") and len(key) > 1 and not _tag_matches(event, key[1:], wanted):
            return False
    return True


def matches_any(filters: Iterable[Mapping[str, Any]], event: Event) -> bool:
    """True when the event matches at least one filter (a REQ's filters are OR-ed)."""
    return any(matches(f, event) for f in filters)
