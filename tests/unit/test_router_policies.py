"""Pure router policies: endpoint address rules, rate limiting, quote pricing, cooldowns."""

from __future__ import annotations

import time

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_router.endpoints import is_public_address, parse_endpoint
from fedai_router.pricing import quote_price
from fedai_router.ratelimit import RateLimiter
from fedai_router.registry import COOLDOWN_MAX_S, QUARANTINE_S, NodeState, Registry


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_public_address_rule(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://example.com", True),
        ("https://example.com:8443/base", True),
        ("ftp://example.com", False),
        ("http://", False),
        ("http://u:p@example.com", False),
        ("http://example.com/?q", False),
        ("http://example.com/#f", False),
        ("http://example.com:99999", False),
        ("example.com", False),
    ],
)
def test_endpoint_shape(url: str, ok: bool) -> None:
    if ok:
        assert parse_endpoint(url)[0] == "example.com"
    else:
        with pytest.raises(FedaiError) as err:
            parse_endpoint(url)
        assert err.value.code == "invalid_request"


def test_rate_limiter_bucket() -> None:
    limiter = RateLimiter(limit=3, window_s=3.0)
    for _ in range(3):
        limiter.check("k", now=100.0)
    with pytest.raises(FedaiError) as err:
        limiter.check("k", now=100.0)
    assert err.value.code == "rate_limited"
    assert err.value.retry_after_ms == 1000
    limiter.check("other", now=100.0)  # independent bucket
    limiter.check("k", now=101.01)  # refilled one token after ~1 s


def test_quote_price_breakdown_rounds_each_part_up() -> None:
    price = quote_price(Pricing(input_msat=1500, output_msat=2500), 3, 5, fee_base_msat=10, fee_ppm=100_000)
    assert (price.input_msat, price.output_msat) == (5, 13)  # 4.5 -> 5, 12.5 -> 13
    assert price.router_fee_msat == 10 + 2  # 10% of 18 = 1.8 -> 2
    assert price.total_msat == 5 + 13 + 12


def _state() -> NodeState:
    desc = NodeDescriptor(
        endpoint="http://n",
        models=[ModelInfo(id="m", context_window=10, max_tokens=10, pricing=Pricing(input_msat=1, output_msat=1))],
        capacity=Capacity(max_concurrent=1),
    )
    return NodeState(pubkey="a" * 64, descriptor=desc, verified=True, heartbeat=True, last_seen=time.time())


def test_cooldown_grows_exponentially_and_is_capped() -> None:
    registry = Registry(pool=None)  # type: ignore[arg-type]  # cooldown bookkeeping touches no database
    node = _state()
    waits = []
    for _ in range(10):
        registry.failed(node)
        waits.append(node.cooldown_until - time.time())
    assert waits[0] == pytest.approx(0.5, abs=0.05)
    assert waits[1] == pytest.approx(1.0, abs=0.05)
    assert max(waits) <= COOLDOWN_MAX_S + 0.01
    registry.failed(node, retry_after_s=20.0)
    assert node.cooldown_until - time.time() >= COOLDOWN_MAX_S - 0.1
    registry.failed(node, quarantine=True)
    assert node.cooldown_until - time.time() == pytest.approx(QUARANTINE_S, abs=0.1)
