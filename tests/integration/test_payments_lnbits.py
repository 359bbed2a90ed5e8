"""The LNbits backend against a real LNbits (FakeWallet): invoices, lookups, payments, balances, refusals.

FakeWallet settles payments between wallets of one LNbits internally, with real BOLT11 invoices and real
preimages, so every proof here is checked the way a payee checks it: sha256(preimage) = payment hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fedai.lnbits import LnbitsAdmin, LnbitsInstall, LnbitsServer, LnbitsWallet
from fedai.payments.backends.lnbits import LnbitsBackend, open_lnbits
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.invoice import decode_invoice
from fedai.payments.spec import parse_spec
from fedai.payments.wallet import InvoiceState, Wallet
from tests.support.wallet_contract import check_wallet_contract

pytestmark = pytest.mark.integration

MAX_FEE_MSAT = 50_000  # above LNbits' default fee reserve, max(2 sat, 1 %), for every amount here


def backend(wallet: LnbitsWallet, *, admin: bool = True) -> LnbitsBackend:
    return open_lnbits(parse_spec(wallet.uri(admin=admin)))


@pytest.fixture
async def accounts(lnbits_wallet: Callable[..., LnbitsWallet]) -> tuple[LnbitsWallet, LnbitsWallet]:
    """A payee's wallet with nothing and a payer's with 1000 sats."""
    return lnbits_wallet("payee"), lnbits_wallet("payer", 1000)


@pytest.fixture
async def pair(accounts: tuple[LnbitsWallet, LnbitsWallet]) -> AsyncIterator[tuple[LnbitsBackend, LnbitsBackend]]:
    """The backends on those wallets."""
    payee, payer = backend(accounts[0]), backend(accounts[1])
    yield payee, payer
    await payee.aclose()
    await payer.aclose()


def key() -> str:
    return os.urandom(8).hex()


async def test_an_invoice_paid_from_another_wallet_is_paid_with_its_preimage(
    pair: tuple[LnbitsBackend, LnbitsBackend],
) -> None:
    payee, payer = pair
    assert isinstance(payee, Wallet)
    invoice = await payee.create_invoice(21_000, "fedai test", 600, key())
    decoded = decode_invoice(invoice.bolt11, network="bitcoin")
    assert (decoded.amount_msat, decoded.payment_hash) == (21_000, invoice.payment_hash)
    before = await payee.lookup_invoice(invoice.payment_hash)
    assert before.state is InvoiceState.PENDING and before.preimage is None

    payment = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())

    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == invoice.payment_hash
    after = await payee.lookup_invoice(invoice.payment_hash)
    assert (after.state, after.amount_msat, after.preimage) == (InvoiceState.PAID, 21_000, payment.preimage)
    assert await payee.balance_msat() == 21_000
    assert await payer.balance_msat() == 1_000_000 - 21_000 - payment.fee_msat


async def test_the_wallet_contract_holds(pair: tuple[LnbitsBackend, LnbitsBackend]) -> None:
    await check_wallet_contract(*pair, network="bitcoin", prefix="lnbits")


async def test_paying_twice_with_one_key_pays_once(pair: tuple[LnbitsBackend, LnbitsBackend]) -> None:
    payee, payer = pair
    invoice = await payee.create_invoice(5_000, "once", 600, key())
    paying = key()
    first = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, paying)
    again = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, paying)
    assert again == first
    assert await payer.balance_msat() == 1_000_000 - 5_000
    other = await payee.create_invoice(6_000, "other", 600, key())
    with pytest.raises(WalletRefused) as refused:
        await payer.pay_invoice(other.bolt11, MAX_FEE_MSAT, paying)
    assert refused.value.reason == "idempotency_conflict"


async def test_concurrent_payments_of_one_invoice_pay_once(pair: tuple[LnbitsBackend, LnbitsBackend]) -> None:
    payee, payer = pair
    invoice = await payee.create_invoice(7_000, "race", 600, key())
    results = await asyncio.gather(*(payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key()) for _ in range(3)))
    assert len({r.preimage for r in results}) == 1
    assert await payer.balance_msat() == 1_000_000 - 7_000


async def test_a_paid_invoice_is_paid_again_from_a_fresh_process_without_paying(
    pair: tuple[LnbitsBackend, LnbitsBackend], accounts: tuple[LnbitsWallet, LnbitsWallet]
) -> None:
    payee, payer = pair
    invoice = await payee.create_invoice(3_000, "restart", 600, key())
    first = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())
    restarted = backend(accounts[1])  # no memory of the first payment
    try:
        assert await restarted.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key()) == first
    finally:
        await restarted.aclose()
    assert await payer.balance_msat() == 1_000_000 - 3_000


async def test_creating_twice_with_one_key_answers_the_same_invoice_even_after_a_restart(
    pair: tuple[LnbitsBackend, LnbitsBackend], accounts: tuple[LnbitsWallet, LnbitsWallet]
) -> None:
    payee, _ = pair
    creating = key()
    first = await payee.create_invoice(2_000, "same", 600, creating)
    assert await payee.create_invoice(2_000, "same", 600, creating) == first
    restarted = backend(accounts[0])
    try:
        assert await restarted.create_invoice(2_000, "same", 600, creating) == first
        with pytest.raises(WalletRefused) as refused:
            await restarted.create_invoice(9_000, "same", 600, creating)
        assert refused.value.reason == "idempotency_conflict"
    finally:
        await restarted.aclose()
    assert (await payee.create_invoice(2_000, "same", 600, key())).payment_hash != first.payment_hash


async def test_insufficient_balance_is_refused_and_nothing_moves(pair: tuple[LnbitsBackend, LnbitsBackend]) -> None:
    payee, payer = pair
    invoice = await payee.create_invoice(2_000_000, "too much", 600, key())
    with pytest.raises(WalletRefused) as refused:
        await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())
    assert refused.value.reason == "insufficient_balance"
    assert await payer.balance_msat() == 1_000_000
    assert (await payee.lookup_invoice(invoice.payment_hash)).state is InvoiceState.PENDING


async def test_amounts_that_are_not_whole_sats_and_fee_limits_below_the_reserve_are_refused(
    pair: tuple[LnbitsBackend, LnbitsBackend],
) -> None:
    payee, payer = pair
    with pytest.raises(WalletRefused) as refused:
        await payee.create_invoice(1_500, "msat", 600, key())
    assert refused.value.reason == "unsupported_amount"
    invoice = await payee.create_invoice(1_000, "fees", 600, key())
    with pytest.raises(WalletRefused) as refused:
        await payer.pay_invoice(invoice.bolt11, 0, key())
    assert refused.value.reason == "fee_limit"
    assert await payer.balance_msat() == 1_000_000


async def test_lookups_answer_only_this_wallets_own_invoices(pair: tuple[LnbitsBackend, LnbitsBackend]) -> None:
    payee, payer = pair
    invoice = await payee.create_invoice(1_000, "mine", 600, key())
    await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())
    with pytest.raises(WalletRefused) as refused:  # the payer's record of it is an outgoing payment
        await payer.lookup_invoice(invoice.payment_hash)
    assert refused.value.reason == "unknown_invoice"
    with pytest.raises(WalletRefused) as refused:
        await payee.lookup_invoice(os.urandom(32).hex())
    assert refused.value.reason == "unknown_invoice"


async def test_the_invoice_key_receives_but_cannot_pay(
    pair: tuple[LnbitsBackend, LnbitsBackend], lnbits_wallet: Callable[..., LnbitsWallet]
) -> None:
    payee, _ = pair
    reader = backend(lnbits_wallet("reader", 100), admin=False)
    try:
        invoice = await payee.create_invoice(1_000, "read-only", 600, key())
        with pytest.raises(WalletUnavailable) as unavailable:
            await reader.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())
        assert unavailable.value.reason == "unauthorized"
        assert await reader.balance_msat() == 100_000
    finally:
        await reader.aclose()


async def test_a_stopped_lnbits_is_unavailable(lnbits_install: LnbitsInstall, tmp_path: Path) -> None:
    with LnbitsServer(lnbits_install, tmp_path / "data", log_path=tmp_path / "lnbits.log") as server:
        with LnbitsAdmin(server.url) as admin:
            admin.first_install()
            made = admin.create_wallet("short-lived")
        wallet = backend(made)
        assert await wallet.balance_msat() == 0
    try:
        for call in (wallet.balance_msat(), wallet.create_invoice(1_000, "down", 600, key())):
            with pytest.raises(WalletUnavailable) as unavailable:
                await call
            assert unavailable.value.reason == "unreachable"
            assert made.admin_key not in str(unavailable.value)
    finally:
        await wallet.aclose()
