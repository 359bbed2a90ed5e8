"""ROUTER_PAYMENT_RETENTION_S and NODE_PAYMENT_RETENTION_S: 90 days by default, 0 keeps the rows, anything else
shorter than an hour (or not a number) is refused at start naming the variable."""

from __future__ import annotations

import pytest

from fedai.payments.retention import DEFAULT_PAYMENT_RETENTION_S, MIN_PAYMENT_RETENTION_S
from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_node.config import from_env as node_from_env
from fedai_router.config import RouterSettings


def router(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))


def node_retention(**env: str) -> int:
    base = {"NODE_PRIVATE_KEY": Keys.generate().secret_hex, "ROUTER_PUBLIC_KEY": Keys.generate().npub}
    return node_from_env(Env({**base, "NODE_RUNNER": "mock", **env})).payment_retention_s


def test_defaults_are_ninety_days() -> None:
    assert DEFAULT_PAYMENT_RETENTION_S == 90 * 86_400
    assert router().retention.payments_s == DEFAULT_PAYMENT_RETENTION_S
    assert node_retention() == DEFAULT_PAYMENT_RETENTION_S


def test_values_are_read_and_zero_keeps_the_rows() -> None:
    assert router(ROUTER_PAYMENT_RETENTION_S="0").retention.payments_s == 0
    assert router(ROUTER_PAYMENT_RETENTION_S=str(MIN_PAYMENT_RETENTION_S)).retention.payments_s == 3_600
    assert node_retention(NODE_PAYMENT_RETENTION_S="0") == 0
    assert node_retention(NODE_PAYMENT_RETENTION_S="86400") == 86_400


@pytest.mark.parametrize("value", ["1", "3599", "-1", "soon", str(11 * 366 * 86_400)])
def test_bad_values_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="ROUTER_PAYMENT_RETENTION_S"):
        router(ROUTER_PAYMENT_RETENTION_S=value)
    with pytest.raises(ConfigError, match="NODE_PAYMENT_RETENTION_S"):
        node_retention(NODE_PAYMENT_RETENTION_S=value)
