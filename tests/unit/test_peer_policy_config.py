"""Announcement and peer-policy variables: parsed, typed, and refused at start when they cannot work."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys, npub
from fedai.service.config import ConfigError, Env
from fedai_router.config import RouterSettings
from fedai_router.federation.peers import PeerBook


def settings(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))


def test_defaults() -> None:
    s = settings()
    assert (s.announce_s, s.busy_at, s.saturated_at, s.surge_start, s.surge_max) == (60, 0.7, 0.95, 0.5, 2.0)
    assert (s.peer_allowlist, s.peer_blocklist, s.peer_mute, s.follow, s.peer_wot_min) == (
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset(),
        0,
    )
    assert (s.peer_rate, s.peer_max_content_bytes, s.peer_ttl_s) == (600, 128 * 1024, 300)


def test_federation_bounds_defaults_and_overrides() -> None:
    s = settings()
    assert (s.fed_min_privacy, s.fed_bid_hold_s, s.fed_max_deadline_s, s.fed_max_open_bids_per_peer) == (1, 30, 600, 32)
    assert (s.fed_min_reputation, s.peer_max, s.peer_max_price_sheets) == (0.0, 1_000, 16)
    assert [s.offload_privacy(level) for level in (0, 1, 2, 3)] == [1, 1, 2, 3]  # raised, never lowered
    plain = settings(
        ROUTER_FED_MIN_PRIVACY="0",
        ROUTER_FED_MAX_PRIVACY="0",
        ROUTER_FED_MIN_REPUTATION="0.4",
        ROUTER_PEER_MAX="10",
        ROUTER_PEER_MAX_PRICE_SHEETS="2",
    )
    assert (plain.offload_privacy(0), plain.fed_min_reputation, plain.peer_max, plain.peer_max_price_sheets) == (
        0,
        0.4,
        10,
        2,
    )
    book = PeerBook.for_settings(plain)
    assert (book.max_peers, book.max_price_sheets) == (10, 2)


def test_lists_accept_npub_and_hex_and_reach_the_policy() -> None:
    a, b, c, f1, f2 = (Keys.generate().pubkey for _ in range(5))
    s = settings(
        ROUTER_PEER_ALLOWLIST=f"{npub(a)}, {b}",
        ROUTER_PEER_BLOCKLIST=c,
        ROUTER_PEER_MUTE=b,
        ROUTER_FOLLOW=f"{f1},{npub(f2)}",
        ROUTER_PEER_WOT_MIN="2",
        ROUTER_PEER_RATE="30",
        ROUTER_ANNOUNCE_S="15",
        ROUTER_BUSY_AT="0.5",
        ROUTER_SATURATED_AT="0.8",
    )
    assert s.peer_allowlist == {a, b} and s.follow == {f1, f2} and s.peer_rate == 30 and s.announce_s == 15
    policy = PeerBook.for_settings(s).policy
    assert policy.state(c) == "blocked"
    assert policy.state(Keys.generate().pubkey) == "not_allowed"
    assert policy.state(b) == "untrusted"  # allowed, but nobody we follow vouches for it
    assert policy.wot_min == 2 and policy.mute == {b}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ROUTER_BUSY_AT": "0.9", "ROUTER_SATURATED_AT": "0.9"}, "ROUTER_BUSY_AT"),
        ({"ROUTER_SATURATED_AT": "1.5"}, "ROUTER_SATURATED_AT"),
        ({"ROUTER_SURGE_MAX": "0.5"}, "ROUTER_SURGE_MAX"),
        ({"ROUTER_ANNOUNCE_S": "0"}, "ROUTER_ANNOUNCE_S"),
        ({"ROUTER_PEER_RATE": "many"}, "ROUTER_PEER_RATE"),
        ({"ROUTER_PEER_BLOCKLIST": "npub1nope"}, "ROUTER_PEER_BLOCKLIST"),
        ({"ROUTER_PEER_WOT_MIN": "1"}, "ROUTER_PEER_WOT_MIN"),  # nobody followed: nobody could ever pass
        ({"ROUTER_FED_MAX_PRIVACY": "0"}, "ROUTER_FED_MIN_PRIVACY"),  # the default floor (PL1) above it
        ({"ROUTER_FED_MIN_PRIVACY": "3"}, "ROUTER_FED_MIN_PRIVACY"),
        ({"ROUTER_FED_BID_HOLD_S": "0"}, "ROUTER_FED_BID_HOLD_S"),
        ({"ROUTER_FED_BID_HOLD_S": "601"}, "ROUTER_FED_BID_HOLD_S"),
        ({"ROUTER_FED_MAX_DEADLINE_S": "86401"}, "ROUTER_FED_MAX_DEADLINE_S"),
        ({"ROUTER_FED_MAX_OPEN_BIDS_PER_PEER": "0"}, "ROUTER_FED_MAX_OPEN_BIDS_PER_PEER"),
        ({"ROUTER_FED_MIN_REPUTATION": "1.5"}, "ROUTER_FED_MIN_REPUTATION"),
        ({"ROUTER_PEER_MAX": "0"}, "ROUTER_PEER_MAX"),
        ({"ROUTER_PEER_MAX_PRICE_SHEETS": "2000"}, "ROUTER_PEER_MAX_PRICE_SHEETS"),
        ({"ROUTER_FED_JOB_TIMEOUT_MS": "86400001"}, "ROUTER_FED_JOB_TIMEOUT_MS"),
    ],
)
def test_unworkable_values_fail_at_start_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        settings(**env)


def test_the_same_key_allowed_and_blocked_is_refused() -> None:
    key = Keys.generate().pubkey
    with pytest.raises(ConfigError, match="ROUTER_PEER_ALLOWLIST and ROUTER_PEER_BLOCKLIST"):
        settings(ROUTER_PEER_ALLOWLIST=key, ROUTER_PEER_BLOCKLIST=key)
