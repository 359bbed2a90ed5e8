"""The wallet contract (tests/support/wallet_contract.py) on every backend built here, and across backends:
LND and Core Lightning wallets, against servers answering their documented shapes over one in-memory ledger."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from fedai.payments.errors import WalletUnavailable
from fedai.payments.measured import MeasuredWallet
from fedai.payments.wallet import Wallet
from tests.support.fake_cln import running_cln
from tests.support.fake_lnd import running_lnd
from tests.support.lightning import Ledger
from tests.support.tls import SelfSigned, self_signed
from tests.support.wallet_contract import check_wallet_contract

pytestmark = pytest.mark.integration

Runner = Callable[..., AbstractAsyncContextManager[Any]]
BACKENDS: dict[str, Runner] = {"lnd": running_lnd, "cln": running_cln}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("contract-tls"))


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.add_node("payee", balance_msat=0)
    ledger.add_node("payer", balance_msat=1_000_000)
    return ledger


@pytest.mark.parametrize(("payee_kind", "payer_kind"), [("lnd", "lnd"), ("cln", "cln"), ("lnd", "cln"), ("cln", "lnd")])
async def test_wallet_contract(
    payee_kind: str, payer_kind: str, ledger: Ledger, tls: SelfSigned, tmp_path: Path
) -> None:
    async with (
        BACKENDS[payee_kind](ledger, "payee", tls, tmp_path) as payee,
        BACKENDS[payer_kind](ledger, "payer", tls, tmp_path) as payer,
    ):
        await check_wallet_contract(payee.wallet, payer.wallet, network="regtest")
    assert len(ledger.payments) == 1


async def test_the_contract_fails_a_wallet_that_pays_twice(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    """The contract can fail: behind a backend that forgets what it paid, the payer's balance gives it away."""
    ledger.pays_twice = True
    async with (
        running_lnd(ledger, "payee", tls, tmp_path) as payee,
        running_lnd(ledger, "payer", tls, tmp_path) as payer,
    ):
        with pytest.raises(AssertionError):  # at the balance check, after the third payment
            await check_wallet_contract(payee.wallet, payer.wallet, network="regtest")
    assert len(ledger.payments) == 3


async def test_a_measured_wallet_reports_each_call(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    seen: list[tuple[str, str, float]] = []
    async with (
        running_cln(ledger, "payee", tls, tmp_path) as payee,
        running_cln(ledger, "payer", tls, tmp_path) as payer,
    ):
        measured = MeasuredWallet(payee.wallet, lambda method, outcome, s: seen.append((method, outcome, s)))
        assert isinstance(measured, Wallet)
        await check_wallet_contract(measured, payer.wallet, network="regtest")
        payee.fake.faults.status = 503
        with pytest.raises(WalletUnavailable):
            await measured.balance_msat()
        with pytest.raises(ValueError, match="payment_hash"):
            await measured.lookup_invoice("nope")
    outcomes = [(method, outcome) for method, outcome, _ in seen]
    assert outcomes[:2] == [("create_invoice", "ok"), ("create_invoice", "ok")]
    assert ("create_invoice", "idempotency_conflict") in outcomes and ("lookup_invoice", "unknown_invoice") in outcomes
    assert outcomes[-2:] == [("balance_msat", "backend_error"), ("lookup_invoice", "invalid_argument")]
    assert all(seconds >= 0 for _, _, seconds in seen)
