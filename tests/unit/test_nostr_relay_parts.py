"""The relay pool's small parts on their own: frame elements, bounded memory, the author budget, backoff."""

from __future__ import annotations

import msgspec
import pytest

from fedai.nostr.frames import REASON_LOG_LEN, Malformed, decode_frame, element, is_auth_required, short
from fedai.nostr.limits import AuthorBudget, Lru
from fedai.nostr.relay import RelayConnection, RelayHooks, RelaySettings


def test_elements_are_decoded_one_at_a_time_as_the_type_they_must_have() -> None:
    frame = decode_frame(b'["OK", "abc", true, "duplicate: have it"]')
    assert (element(frame, 0, str), element(frame, 2, bool), element(frame, 3, str)) == (
        "OK",
        True,
        "duplicate: have it",
    )
    with pytest.raises(Malformed, match="missing element 4"):
        element(frame, 4, str)
    with pytest.raises(Malformed):
        element(frame, 1, bool)
    assert isinstance(frame[1], msgspec.Raw)


def test_reasons_are_shortened_for_logs_and_auth_required_is_recognised() -> None:
    assert short("x" * REASON_LOG_LEN) == "x" * REASON_LOG_LEN
    assert short("x" * (REASON_LOG_LEN + 1)) == "x" * REASON_LOG_LEN + "…"
    assert is_auth_required("auth-required: sign in first")
    assert not is_auth_required("blocked: auth-required: no")


def test_lru_forgets_the_least_recently_used() -> None:
    lru = Lru(2)
    lru.add("a", 1)
    lru.add("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.add("c", 3)
    assert "b" not in lru and "a" in lru and "c" in lru


def test_author_budget_is_a_sliding_window_per_author() -> None:
    budget = AuthorBudget(2, 10.0)
    assert budget.allow("alice", 0.0) and budget.allow("alice", 1.0)
    assert not budget.allow("alice", 5.0), "a third event within the window is refused"
    assert budget.allow("bob", 5.0), "authors are charged separately"
    assert budget.allow("alice", 10.5), "the first charge left the window"
    with pytest.raises(ValueError, match="positive"):
        AuthorBudget(0, 1.0)


def test_author_budget_tracks_a_bounded_number_of_authors() -> None:
    budget = AuthorBudget(1, 60.0, max_authors=2)
    assert budget.allow("a", 0.0) and budget.allow("b", 0.0) and budget.allow("c", 0.0)
    assert budget.allow("a", 1.0), "the oldest author was forgotten, so its budget starts afresh"
    assert not budget.allow("c", 1.0)


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    settings = RelaySettings(None, 1024, 1.0, backoff_initial=0.5, backoff_max=4.0)
    hooks = RelayHooks(
        count=lambda _: None,
        up=lambda: None,
        down=lambda _: None,
        open_subscriptions=list,
        subscription=lambda _: None,
        on_event=lambda *_: None,
        on_eose=lambda *_: None,
        spawn=lambda coro: coro.close(),
    )
    relay = RelayConnection("ws://user:secret@127.0.0.1:1/?token=t", settings, hooks)
    assert "secret" not in relay.label and "token" not in relay.label
    for attempt, cap in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (1000, 4.0)):
        delays = [relay._backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and max(delays) > cap / 2
