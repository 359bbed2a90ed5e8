"""The router's edge, pure parts: source addresses behind proxies, bounded rate-limit state, operator token
matching, edge settings from the environment, and URL redaction."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import pytest

from fedai.observability.logging import redact_url
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_router.address import UNKNOWN, address_from_scope, rate_key
from fedai_router.admin import token_matches
from fedai_router.config import RouterSettings
from fedai_router.ratelimit import RateLimiter

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def scope(peer: str | None, *xff: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 5555) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in xff],
    }


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() -> None:
    assert address_from_scope(scope("198.51.100.7", "203.0.113.9"), ()) == "198.51.100.7"
    assert address_from_scope(scope("198.51.100.7", "203.0.113.9"), PROXIES) == "198.51.100.7"  # untrusted peer


def test_behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() -> None:
    assert address_from_scope(scope("10.0.0.1", "203.0.113.9"), PROXIES) == "203.0.113.9"
    # the client prepended a forged address: the proxies' own entries are on the right
    assert address_from_scope(scope("10.0.0.1", "1.2.3.4, 203.0.113.9, 10.0.0.2"), PROXIES) == "203.0.113.9"
    # several headers are one list, in order
    assert address_from_scope(scope("10.0.0.1", "1.2.3.4", "203.0.113.9"), PROXIES) == "203.0.113.9"


def test_a_chain_of_only_proxies_or_garbage_stops_at_the_last_trusted_hop() -> None:
    assert address_from_scope(scope("10.0.0.1", "10.0.0.3, 10.0.0.2"), PROXIES) == "10.0.0.3"
    assert address_from_scope(scope("10.0.0.1", "not-an-ip, 10.0.0.2"), PROXIES) == "10.0.0.2"
    assert address_from_scope(scope("10.0.0.1"), PROXIES) == "10.0.0.1"


def test_address_forms() -> None:
    assert address_from_scope(scope("10.0.0.1", "[2001:db8::1]:443"), PROXIES) == "2001:db8::1"
    assert address_from_scope(scope("10.0.0.1", "203.0.113.9:1234"), PROXIES) == "203.0.113.9"
    assert address_from_scope(scope("::ffff:198.51.100.7"), ()) == "198.51.100.7"
    assert address_from_scope(scope("fd00::1", "2001:db8::5"), PROXIES) == "2001:db8::5"
    assert address_from_scope(scope(None), PROXIES) == UNKNOWN


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("198.51.100.7") == "198.51.100.7"


def test_the_limiter_refuses_past_its_budget_and_refills() -> None:
    limiter = RateLimiter(2, 2.0, what="address")
    limiter.check("a", now=0.0)
    limiter.check("a", now=0.0)
    with pytest.raises(FedaiError) as info:
        limiter.check("a", now=0.0)
    assert info.value.code is ErrorCode.RATE_LIMITED and info.value.retry_after_ms == 1000
    assert "address" in info.value.message
    limiter.check("a", now=1.0)


def test_the_limiter_keeps_at_most_max_keys_least_recently_used_out() -> None:
    limiter = RateLimiter(1, 60.0, max_keys=100)
    limiter.check("busy", now=0.0)
    for i in range(10_000):  # a flood of fresh keys, each inside the window
        limiter.check(f"fresh-{i}", now=1.0)
        assert len(limiter) <= 100
    with pytest.raises(FedaiError):  # recently used keys stay tracked
        limiter.check("fresh-9999", now=1.0)


def test_operator_token_matching() -> None:
    digests = frozenset({hashlib.sha256(b"right").hexdigest(), hashlib.sha256(b"other").hexdigest()})
    assert token_matches("right", digests) and token_matches("other", digests)
    assert not token_matches("wrong", digests)
    assert not token_matches("right", frozenset())


def settings(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().secret_hex, **env}))


def test_edge_defaults_are_safe_for_a_public_router() -> None:
    s = settings()
    assert s.public_url is None and not s.admin_token_sha256 and not s.admin_keys
    assert s.metrics_public is False and s.trusted_proxies == ()
    assert (s.addr_rate_limit_max, s.addr_rate_limit_window_ms) == (1200, 60_000)


def test_edge_settings_from_the_environment() -> None:
    digest = hashlib.sha256(b"t").hexdigest()
    admin = Keys.generate()
    s = settings(
        ROUTER_ADMIN_TOKEN_SHA256=digest,
        ROUTER_ADMIN_KEYS=admin.npub,
        ROUTER_METRICS_PUBLIC="true",
        ROUTER_TRUSTED_PROXIES="10.0.0.0/8, ::1",
        ROUTER_ADDR_RATE_LIMIT_MAX="50",
        ROUTER_PUBLIC_URL="https://router.example/",
    )
    assert s.admin_token_sha256 == {digest} and s.admin_keys == {admin.pubkey} and s.metrics_public
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.addr_rate_limit_max == 50 and s.public_url == "https://router.example"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROUTER_ADMIN_TOKEN_SHA256", "not-a-digest"),
        ("ROUTER_ADMIN_TOKEN_SHA256", "A" * 64),
        ("ROUTER_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("ROUTER_TRUSTED_PROXIES", "proxy.example"),
        ("ROUTER_ADDR_RATE_LIMIT_MAX", "0"),
        ("ROUTER_ADDR_RATE_LIMIT_WINDOW_MS", "0"),
        ("ROUTER_ADMIN_KEYS", "npub1nope"),
        ("FEDAI_NIP98_WINDOW_S", "601"),
    ],
)
def test_bad_edge_settings_fail_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings(**{name: value})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://relay.example/?token=sekrit", "wss://relay.example/?***"),
        ("wss://user:sekrit@relay.example:444/nostr", "wss://***@relay.example:444/nostr"),
        ("ws://127.0.0.1:7777", "ws://127.0.0.1:7777"),
        ("ws://[::1]:7777/#frag", "ws://[::1]:7777/"),
    ],
)
def test_relay_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "sekrit" not in redact_url(url)
