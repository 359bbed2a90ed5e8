"""When paid OpenAI calls get a refund link (docs/payments.md#the-openai-edge): ROUTER_EDGE_REFUNDS if set, else
only over an https ROUTER_PUBLIC_URL (nodes reach public https destinations only), never without a public URL."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_router.config import RouterSettings
from fedai_router.openai_api.edge_refunds import _amount, offers_links


@pytest.mark.parametrize(
    ("public_url", "setting", "offered"),
    [
        ("https://router.example", None, True),
        ("http://127.0.0.1:8080", None, False),  # a node would refuse an http destination
        ("http://127.0.0.1:8080", True, True),  # loopback tests, with NODE_REFUND_ALLOW_PRIVATE on the nodes
        ("https://router.example", False, False),
        (None, True, False),  # no public URL: no link anyone could reach
    ],
)
def test_links_are_offered_when_the_nodes_can_reach_them(
    public_url: str | None, setting: bool | None, offered: bool
) -> None:
    assert offers_links(public_url, setting) is offered


def test_the_setting_is_read_from_the_environment() -> None:
    base = {"ROUTER_PRIVATE_KEY": Keys.generate().nsec}
    assert RouterSettings.from_env(Env(base)).edge_refunds is None
    assert RouterSettings.from_env(Env(base | {"ROUTER_EDGE_REFUNDS": "false"})).edge_refunds is False
    assert RouterSettings.from_env(Env(base | {"ROUTER_EDGE_REFUNDS": "true"})).edge_refunds is True
    with pytest.raises(ConfigError):
        RouterSettings.from_env(Env(base | {"ROUTER_EDGE_REFUNDS": "maybe"}))


@pytest.mark.parametrize(
    ("value", "amount"), [("1000", 1000), ("-5", None), ("1e3", None), (None, None), ("9" * 16, None)]
)
def test_a_callback_amount_is_whole_msat(value: str | None, amount: int | None) -> None:
    assert _amount(value) == amount
