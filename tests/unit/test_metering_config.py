"""Metering bound variables: defaults a public router can run with, parsed, and refused out of range at start."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_node.config import from_env as node_from_env
from fedai_router.config import RouterSettings


def settings(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))


def test_defaults() -> None:
    s = settings()
    assert (s.input_tokens_per_byte, s.input_tokens_overhead) == (1, 1024)


def test_values_are_read() -> None:
    s = settings(ROUTER_INPUT_TOKENS_PER_BYTE="4", ROUTER_INPUT_TOKENS_OVERHEAD="0", ROUTER_FEE_BASE_MSAT="10")
    assert (s.input_tokens_per_byte, s.input_tokens_overhead, s.fee_base_msat) == (4, 0, 10)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROUTER_INPUT_TOKENS_PER_BYTE", "0"),
        ("ROUTER_INPUT_TOKENS_PER_BYTE", "17"),
        ("ROUTER_INPUT_TOKENS_OVERHEAD", "-1"),
        ("ROUTER_INPUT_TOKENS_OVERHEAD", "1000001"),
        ("ROUTER_FEE_BASE_MSAT", str(10**15 + 1)),  # a quote total must fit `bigint`
    ],
)
def test_out_of_range_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings(**{name: value})


def test_a_node_price_routers_would_refuse_is_refused_at_the_nodes_start() -> None:
    env = {
        "NODE_PRIVATE_KEY": Keys.generate().nsec,
        "ROUTER_ENDPOINT": "http://127.0.0.1:1",
        "NODE_RUNNER": "mock",
        "ROUTER_PUBLIC_KEY": Keys.generate().pubkey,
    }
    assert node_from_env(Env({**env, "NODE_PRICE_INPUT_MSAT": str(10**12)})).price_input_msat == 10**12
    with pytest.raises(ConfigError, match="NODE_PRICE_INPUT_MSAT"):
        node_from_env(Env({**env, "NODE_PRICE_INPUT_MSAT": str(10**12 + 1)}))
