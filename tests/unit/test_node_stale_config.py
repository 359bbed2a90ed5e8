"""NODE_PAYMENT_STALE_S: when a claim held that long is a dead process's (docs/payments.md#single-use-claims).
300 s by default, never shorter than NODE_RUNNER_TIMEOUT_MS plus the margin (unset: raised to it; set below it,
or not a number, refused at start naming the variable)."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_node.config import DEFAULT_PAYMENT_STALE_S, STALE_MARGIN_S, from_env, min_payment_stale_s
from fedai_node.streaming import END_WRITE_TIMEOUT_S


def stale_s(**env: str) -> int:
    base = {"NODE_PRIVATE_KEY": Keys.generate().secret_hex, "ROUTER_PUBLIC_KEY": Keys.generate().npub}
    return from_env(Env({**base, "NODE_RUNNER": "mock", **env})).payment_stale_s


def test_the_default_is_five_minutes_above_the_default_runner_timeout() -> None:
    assert stale_s() == DEFAULT_PAYMENT_STALE_S == 300
    assert min_payment_stale_s(60_000) == 60 + STALE_MARGIN_S


def test_unset_it_follows_a_long_runner_timeout() -> None:
    assert stale_s(NODE_RUNNER_TIMEOUT_MS="600000") == 600 + STALE_MARGIN_S
    assert stale_s(NODE_RUNNER_TIMEOUT_MS="600001") == 601 + STALE_MARGIN_S  # a started second counts whole


def test_a_value_at_or_above_the_minimum_is_read() -> None:
    assert stale_s(NODE_PAYMENT_STALE_S="120") == 120  # 60 s runner timeout + 60 s
    assert stale_s(NODE_PAYMENT_STALE_S="3600", NODE_RUNNER_TIMEOUT_MS="1000") == 3600
    assert stale_s(NODE_PAYMENT_STALE_S="61", NODE_RUNNER_TIMEOUT_MS="1000") == 61


@pytest.mark.parametrize(
    ("value", "timeout_ms"),
    [("119", "60000"), ("300", "600000"), ("0", "1000"), ("-5", "1000"), ("soon", "1000"), ("86401", "1000")],
)
def test_bad_values_are_refused_naming_the_variable(value: str, timeout_ms: str) -> None:
    with pytest.raises(ConfigError, match="NODE_PAYMENT_STALE_S"):
        stale_s(NODE_PAYMENT_STALE_S=value, NODE_RUNNER_TIMEOUT_MS=timeout_ms)


def test_the_refusal_says_what_the_minimum_is_and_why() -> None:
    with pytest.raises(ConfigError, match=r"at least 660 s \(NODE_RUNNER_TIMEOUT_MS plus 60 s\)"):
        stale_s(NODE_PAYMENT_STALE_S="600", NODE_RUNNER_TIMEOUT_MS="600000")


def test_the_margin_covers_a_streams_last_write() -> None:
    """A paid stream holds its claim through its last event's bounded write: the margin must outlast it."""
    assert STALE_MARGIN_S > END_WRITE_TIMEOUT_S
