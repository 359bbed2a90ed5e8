"""NIP-01 filters: building them from keyword arguments and matching events locally."""

from __future__ import annotations

from typing import Any

import pytest

from fedai.nostr.filters import build_filter, matches, matches_any
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys

ALICE = Keys.generate()
BOB = Keys.generate()


def _event(keys: Keys = ALICE, kind: int = 31023, tags: list[list[str]] | None = None, created_at: int = 1000) -> Event:
    return sign_event(keys, kind, "{}", tags or [["d", "node-1"], ["t", "gpu"]], created_at=created_at)


# -- build_filter -----------------------------------------------------------------------------------


def test_build_filter_empty_is_empty_dict() -> None:
    assert build_filter() == {}


def test_build_filter_all_fields() -> None:
    flt = build_filter(kinds=[31023, 31020], authors=[ALICE.pubkey], since=10, until=20, limit=5, d=["a", "b"])
    assert flt == {
        "kinds": [31023, 31020],
        "authors": [ALICE.pubkey],
        "#d": ["a", "b"],
        "since": 10,
        "until": 20,
        "limit": 5,
    }


def test_build_filter_ids_and_several_tags() -> None:
    ev = _event()
    flt = build_filter(ids=[ev.id], e=["x"], p=[BOB.pubkey], T=["upper"])
    assert flt == {"ids": [ev.id], "#e": ["x"], "#p": [BOB.pubkey], "#T": ["upper"]}


def test_build_filter_lone_string_is_one_value() -> None:
    assert build_filter(authors=ALICE.pubkey, d="node-1") == {"authors": [ALICE.pubkey], "#d": ["node-1"]}


def test_build_filter_accepts_int_enums_and_generators() -> None:
    from fedai.protocol.kinds import Kind

    flt = build_filter(kinds=(k for k in [Kind.NODE_ANNOUNCE]))
    assert flt == {"kinds": [31023]}
    assert type(flt["kinds"][0]) is int


@pytest.mark.parametrize("name", ["dd", "expiration", "_", "1"])
def test_build_filter_refuses_non_single_letter_tags(name: str) -> None:
    tags: dict[str, Any] = {name: ["x"]}
    with pytest.raises(ValueError, match="single letters"):
        build_filter(**tags)


def test_build_filter_refuses_non_string_tag_values() -> None:
    with pytest.raises(TypeError):
        build_filter(d=[1, 2])  # type: ignore[list-item]


def test_build_filter_refuses_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        build_filter(limit=-1)


def test_build_filter_keeps_zero_values() -> None:
    assert build_filter(since=0, limit=0) == {"since": 0, "limit": 0}


# -- matches ----------------------------------------------------------------------------------------


def test_empty_filter_matches_everything() -> None:
    assert matches({}, _event())


def test_ids() -> None:
    ev = _event()
    assert matches({"ids": [ev.id]}, ev)
    assert not matches({"ids": ["0" * 64]}, ev)


def test_authors() -> None:
    ev = _event()
    assert matches({"authors": [BOB.pubkey, ALICE.pubkey]}, ev)
    assert not matches({"authors": [BOB.pubkey]}, ev)


def test_kinds() -> None:
    ev = _event(kind=31020)
    assert matches({"kinds": [1, 31020]}, ev)
    assert not matches({"kinds": [31023]}, ev)


def test_empty_list_matches_nothing() -> None:
    ev = _event()
    assert not matches({"kinds": []}, ev)
    assert not matches({"authors": []}, ev)
    assert not matches({"#d": []}, ev)


def test_since_and_until_are_inclusive() -> None:
    ev = _event(created_at=1000)
    assert matches({"since": 1000, "until": 1000}, ev)
    assert matches({"since": 999}, ev)
    assert not matches({"since": 1001}, ev)
    assert matches({"until": 1001}, ev)
    assert not matches({"until": 999}, ev)


def test_tag_filters_match_first_value_of_named_tags() -> None:
    ev = _event(tags=[["d", "node-1"], ["t", "gpu"], ["t", "eu"], ["p", BOB.pubkey, "wss://relay"]])
    assert matches({"#d": ["node-1"]}, ev)
    assert matches({"#t": ["eu"]}, ev)
    assert matches({"#t": ["us", "gpu"]}, ev)
    assert matches({"#p": [BOB.pubkey]}, ev)
    assert not matches({"#p": ["wss://relay"]}, ev), "only the tag's first value is indexed"
    assert not matches({"#d": ["node-2"]}, ev)
    assert not matches({"#e": ["anything"]}, ev), "an absent tag never matches"


def test_tag_name_is_case_sensitive_and_short_tags_are_ignored() -> None:
    ev = _event(tags=[["d"], ["D", "x"]])
    assert not matches({"#d": ["x"]}, ev)
    assert matches({"#D": ["x"]}, ev)


def test_all_conditions_must_hold() -> None:
    ev = _event()
    base = {"kinds": [31023], "authors": [ALICE.pubkey], "#d": ["node-1"], "since": 0}
    assert matches(base, ev)
    assert not matches({**base, "authors": [BOB.pubkey]}, ev)
    assert not matches({**base, "#d": ["other"]}, ev)
    assert not matches({**base, "kinds": [1]}, ev)


def test_limit_and_unknown_keys_are_ignored() -> None:
    assert matches({"limit": 0, "search": "whatever"}, _event())


def test_build_filter_output_matches() -> None:
    ev = _event()
    assert matches(build_filter(kinds=[31023], authors=[ALICE.pubkey], d=["node-1"], t="gpu"), ev)
    assert not matches(build_filter(kinds=[31023], d=["node-2"]), ev)


def test_matches_any_is_an_or() -> None:
    ev = _event(kind=31023)
    assert matches_any([{"kinds": [1]}, {"kinds": [31023]}], ev)
    assert not matches_any([{"kinds": [1]}, {"authors": [BOB.pubkey]}], ev)
    assert not matches_any([], ev)
