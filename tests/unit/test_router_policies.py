"""Pure router policies: endpoint address rules, rate limiting, quote pricing, cooldowns."""

from __future__ import annotations

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import Pricing
from fedai_router.endpoints import is_public_address, parse_endpoint
from fedai_router.health import COOLDOWN_MAX_S, QUARANTINE_S, Health, cooldown_s, record_failure, record_success
from fedai_router.pricing import quote_price
from fedai_router.ratelimit import RateLimiter
from fedai_router.retry import RetryBudget
from fedai_router.trust import effective_trust


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


def test_cooldown_grows_exponentially_and_is_capped() -> None:
    waits = [cooldown_s(n) for n in range(1, 12)]
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(waits) == COOLDOWN_MAX_S
    assert cooldown_s(1, retry_after_s=20.0) == 20.0  # the node's Retry-After is honoured
    assert cooldown_s(1, retry_after_s=3600.0) == COOLDOWN_MAX_S  # but capped


def test_failures_cool_down_quarantine_and_success_recovers() -> None:
    h = Health()
    record_failure(h, 100.0, "upstream_error")
    assert (h.consecutive_failures, h.cooldown_until, h.probing) == (1, 100.5, True)
    record_failure(h, 100.2, "upstream_error")  # a call already in flight when the node broke
    assert (h.consecutive_failures, h.cooldown_until, h.failures) == (1, 100.5, 2)  # no escalation
    record_failure(h, 101.0, "upstream_error")  # the probe after the cooldown fails: next step
    assert (h.consecutive_failures, h.cooldown_until) == (2, 102.0)
    record_failure(h, 101.5, "upstream_error", quarantine=True)
    assert h.blocked_until() == 101.5 + QUARANTINE_S
    record_success(h, 12.0)
    assert (h.consecutive_failures, h.cooldown_until, h.probing) == (0, 0.0, False)
    assert h.blocked_until() == 101.5 + QUARANTINE_S  # a quarantine runs its course
    assert h.latency_ms == 12.0


def test_retry_after_extends_a_running_cooldown() -> None:
    h = Health()
    record_failure(h, 100.0, "upstream_error")
    record_failure(h, 100.1, "capacity_exceeded", retry_after_s=10.0)
    assert h.cooldown_until == pytest.approx(110.1)


def test_reliability_prior_and_window() -> None:
    h = Health()
    assert h.reliability == 0.95  # unmeasured: 19 in 20
    h.successes, h.failures = 80, 0
    assert h.reliability == pytest.approx(0.99)
    h.successes, h.failures = 0, 40
    assert h.reliability == pytest.approx(19 / 60)


def test_trust_moves_from_manifest_to_observation() -> None:
    h = Health()
    assert effective_trust(0.8, h) == 0.8
    h.successes, h.failures = 20, 0
    assert 0.8 < effective_trust(0.8, h) < h.reliability
    h.successes, h.failures = 10, 190
    assert effective_trust(0.8, h) < 0.2


def test_retry_budget_limits_failovers_to_a_share_of_requests() -> None:
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, burst=2.0)
    assert budget.try_retry(now=0.0) and budget.try_retry(now=0.0)  # the initial burst
    assert not budget.try_retry(now=0.0)
    for _ in range(10):
        budget.on_request(now=0.0)
    assert budget.try_retry(now=0.0)  # ten requests earned one retry
    assert not budget.try_retry(now=0.0)
    steady = RetryBudget(ratio=0.0, min_per_s=2.0, burst=2.0)
    assert steady.try_retry(now=0.0) and steady.try_retry(now=0.0) and not steady.try_retry(now=0.0)
    assert steady.try_retry(now=0.5)  # one more after half a second at 2/s
