"""Payment settings of the router and the node (docs/payments.md#the-flow): read, defaults, and refusals that
name the variable and fail closed (a paying service never starts without what it needs to be paid)."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_node.config import from_env as node_from_env
from fedai_router.config import RouterSettings

WALLET = "lnd+https://127.0.0.1:8080?macaroon=/nonexistent/admin.macaroon"
SECRET_WALLET = "clnrest+https://127.0.0.1:3010?rune=s3cr3t-rune-value"


def router(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))


def node(**env: str) -> object:
    base = {
        "NODE_PRIVATE_KEY": Keys.generate().nsec,
        "ROUTER_PUBLIC_KEY": Keys.generate().pubkey,
        "NODE_RUNNER": "mock",
    }
    return node_from_env(Env({**base, **env}))


def test_router_defaults_take_no_payment() -> None:
    s = router()
    assert (s.require_payment, s.wallet, s.ln_network, s.payment_ttl_s) == (False, None, "bitcoin", 600)


def test_router_payment_settings_are_read() -> None:
    s = router(
        ROUTER_REQUIRE_PAYMENT="true",
        ROUTER_WALLET=WALLET,
        ROUTER_LN_NETWORK="Regtest",
        ROUTER_PAYMENT_TTL_S="120",
        ROUTER_FEE_BASE_MSAT="1000",
    )
    assert (s.require_payment, s.wallet, s.ln_network, s.payment_ttl_s) == (True, WALLET, "regtest", 120)
    assert WALLET not in repr(s)  # a spec may hold a secret


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ROUTER_REQUIRE_PAYMENT": "true", "ROUTER_FEE_PPM": "100"}, "ROUTER_WALLET"),
        ({"ROUTER_WALLET": "ftp://wallet"}, "ROUTER_WALLET"),
        ({"ROUTER_LN_NETWORK": "litecoin"}, "ROUTER_LN_NETWORK"),
        ({"ROUTER_PAYMENT_TTL_S": "5"}, "ROUTER_PAYMENT_TTL_S"),
        ({"ROUTER_REQUIRE_PAYMENT": "perhaps"}, "ROUTER_REQUIRE_PAYMENT"),
    ],
)
def test_router_refusals_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        router(**env)


def test_a_paying_router_without_a_fee_needs_no_wallet() -> None:
    assert router(ROUTER_REQUIRE_PAYMENT="true").wallet is None


def test_node_payment_settings_are_read() -> None:
    s = node(NODE_REQUIRE_PAYMENT="true", NODE_WALLET=WALLET, NODE_DB_URL="postgresql://db/x", NODE_LN_NETWORK="signet")
    assert (s.require_payment, s.wallet, s.ln_network) == (True, WALLET, "signet")  # type: ignore[attr-defined]
    assert WALLET not in repr(s)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NODE_REQUIRE_PAYMENT": "true"}, "NODE_WALLET"),  # fail closed: never serve for free
        ({"NODE_WALLET": WALLET}, "NODE_DB_URL"),  # the claims live there
        ({"NODE_WALLET": "nope://x", "NODE_DB_URL": "postgresql://db/x"}, "NODE_WALLET"),
        ({"NODE_LN_NETWORK": "mainnet-ish"}, "NODE_LN_NETWORK"),
    ],
)
def test_node_refusals_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        node(**env)


def test_a_wallet_spec_refused_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as refused:
        node(NODE_WALLET=SECRET_WALLET.replace("clnrest+https", "clnrest+ftp"), NODE_DB_URL="postgresql://db/x")
    assert "s3cr3t" not in str(refused.value)
