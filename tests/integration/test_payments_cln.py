"""The Core Lightning backend against a server answering clnrest's documented shapes over TLS on 127.0.0.1, and
an LND wallet and a CLN wallet paying each other's invoices. Not a real Core Lightning: docs/payments.md says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedai.payments.backends.cln import ClnWallet
from fedai.payments.config import open_wallet
from fedai.payments.errors import InvalidInvoice, WalletRefused, WalletUnavailable
from fedai.payments.spec import WalletConfigError
from fedai.payments.wallet import InvoiceState, Wallet
from tests.support.fake_cln import Cln, running_cln
from tests.support.fake_lnd import FakeLnd
from tests.support.lightning import Ledger
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("cln-tls"))


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.add_node("payee", balance_msat=0)
    ledger.add_node("payer", balance_msat=5_000_000)
    return ledger


@pytest.fixture
async def pair(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[tuple[Cln, Cln]]:
    async with (
        running_cln(ledger, "payee", tls, tmp_path) as payee,
        running_cln(ledger, "payer", tls, tmp_path) as payer,
    ):
        yield payee, payer


def assert_no_secret(exc: BaseException, cln: Cln) -> None:
    shown = f"{exc} {exc!r} {getattr(exc, 'detail', '')} {getattr(exc, 'to_dict', dict)()}"
    assert cln.rune not in shown


async def test_invoice_paid_and_proven(pair: tuple[Cln, Cln], ledger: Ledger) -> None:
    payee, payer = pair
    assert isinstance(payee.wallet, ClnWallet) and isinstance(payee.wallet, Wallet)
    invoice = await payee.wallet.create_invoice(21_000, "router fee", 600, "req-1:router")
    assert payee.fake.seen_bodies[-1] == {
        "amount_msat": 21_000,
        "label": "req-1:router",
        "description": "router fee",
        "expiry": 600,
    }
    kept = ledger.invoices[invoice.payment_hash]
    assert invoice.bolt11 == kept.bolt11 and invoice.expires_at == kept.created_at + 600
    assert (await payee.wallet.lookup_invoice(invoice.payment_hash)).state is InvoiceState.PENDING
    payment = await payer.wallet.pay_invoice(invoice.bolt11, 5_000, "req-1:pay-router")
    assert payer.fake.seen_bodies[-1]["maxfee"] == 5_000
    assert payment.preimage == kept.preimage and payment.fee_msat == ledger.fee_base_msat
    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == invoice.payment_hash
    paid = await payee.wallet.lookup_invoice(invoice.payment_hash)
    assert paid.state is InvoiceState.PAID and paid.preimage == kept.preimage and paid.amount_msat == 21_000
    assert await payee.wallet.balance_msat() == 21_000  # channels in CHANNELD_NORMAL only
    assert await payer.wallet.balance_msat() == 5_000_000 - 21_000 - ledger.fee_base_msat


async def test_the_label_is_the_idempotency_key(pair: tuple[Cln, Cln], ledger: Ledger) -> None:
    payee, _ = pair
    first = await payee.wallet.create_invoice(5_000, "m", 600, "key-a")
    again = await payee.wallet.create_invoice(5_000, "m", 600, "key-a")  # Duplicate label → the existing invoice
    assert first == again and len(ledger.invoices) == 1
    with pytest.raises(WalletRefused) as conflict:
        await payee.wallet.create_invoice(6_000, "m", 600, "key-a")
    assert conflict.value.reason == "idempotency_conflict" and len(ledger.invoices) == 1


async def test_paying_twice_pays_once(pair: tuple[Cln, Cln], ledger: Ledger) -> None:
    payee, payer = pair
    invoice = await payee.wallet.create_invoice(30_000, "m", 600, "k")
    results = await asyncio.gather(*(payer.wallet.pay_invoice(invoice.bolt11, 2_000, "pay-k") for _ in range(4)))
    assert len(set(results)) == 1 and len(ledger.payments) == 1
    other = await payee.wallet.create_invoice(1_000, "m", 600, "k2")
    with pytest.raises(WalletRefused) as caught:
        await payer.wallet.pay_invoice(other.bolt11, 2_000, "pay-k")
    assert caught.value.reason == "idempotency_conflict" and len(ledger.payments) == 1


async def test_payment_failures(pair: tuple[Cln, Cln], ledger: Ledger) -> None:
    payee, payer = pair
    big = await payee.wallet.create_invoice(10_000_000, "m", 600, "big")
    with pytest.raises(WalletRefused) as poor:
        await payer.wallet.pay_invoice(big.bolt11, 5_000, "p1")
    assert poor.value.reason == "insufficient_balance" and poor.value.detail and "insufficient" in poor.value.detail
    small = await payee.wallet.create_invoice(1_000, "m", 600, "small")
    with pytest.raises(WalletRefused) as fee:
        await payer.wallet.pay_invoice(small.bolt11, 10, "p2")
    assert fee.value.reason == "fee_limit"
    stranger, _, _ = ledger.nodes["payee"].signer.invoice(1_000)
    with pytest.raises(WalletRefused) as unknown:
        await payer.wallet.pay_invoice(stranger, 5_000, "p3")
    assert unknown.value.reason == "no_route" and ledger.payments == []
    payer.fake.pay_status = "pending"
    with pytest.raises(WalletUnavailable) as flying:
        await payer.wallet.pay_invoice(small.bolt11, 5_000, "p4")
    assert flying.value.reason == "in_flight"
    with pytest.raises(InvalidInvoice):
        await payer.wallet.pay_invoice("lnbc1nonsense", 5_000, "p5")


async def test_lookup_states(pair: tuple[Cln, Cln], ledger: Ledger) -> None:
    payee, _ = pair
    with pytest.raises(WalletRefused) as unknown:
        await payee.wallet.lookup_invoice(os.urandom(32).hex())
    assert unknown.value.reason == "unknown_invoice"
    invoice = await payee.wallet.create_invoice(1_000, "m", 600, "k")
    ledger.invoices[invoice.payment_hash].created_at -= 601
    assert (await payee.wallet.lookup_invoice(invoice.payment_hash)).state is InvoiceState.EXPIRED


async def test_a_wrong_preimage_from_the_backend_is_not_a_proof(pair: tuple[Cln, Cln]) -> None:
    payee, payer = pair
    invoice = await payee.wallet.create_invoice(1_000, "m", 600, "k")
    payer.fake.faults.tamper_preimage = True
    with pytest.raises(WalletUnavailable) as paying:
        await payer.wallet.pay_invoice(invoice.bolt11, 5_000, "k")
    assert paying.value.reason == "bad_reply"
    payee.fake.faults.tamper_preimage = True
    with pytest.raises(WalletUnavailable) as looking:
        await payee.wallet.lookup_invoice(invoice.payment_hash)
    assert looking.value.reason == "bad_reply"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, b"", "backend_error"),
        (500, b'{"code": -1, "message": "lightningd went away"}', "backend_error"),
        (503, b"<html></html>", "bad_reply"),
        (201, b"{not json", "bad_reply"),
        (201, b'"a string"', "bad_reply"),
        (201, b'{"payment_hash": "zz", "bolt11": "lnbcrt1"}', "bad_reply"),
        (404, b'{"code": -32601, "message": "Unknown command"}', "backend_error"),
        (401, b'{"code": 1502, "message": "Not authorized"}', "unauthorized"),
        (403, b"", "unauthorized"),
    ],
)
async def test_faults_are_unavailable(pair: tuple[Cln, Cln], status: int, body: bytes, reason: str) -> None:
    payee, _ = pair
    payee.fake.faults.status, payee.fake.faults.body = status, body
    for call in (payee.wallet.create_invoice(1_000, "m", 600, "k"), payee.wallet.balance_msat()):
        with pytest.raises(WalletUnavailable) as caught:
            await call
        assert caught.value.reason == reason, caught.value
        assert caught.value.status == 503
        assert_no_secret(caught.value, payee)


async def test_a_wrong_rune_is_unavailable_and_never_shown(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    async with running_cln(ledger, "payee", tls, tmp_path) as cln:
        cln.fake.rune = "another-rune"
        with pytest.raises(WalletUnavailable) as caught:
            await cln.wallet.lookup_invoice("00" * 32)
        assert caught.value.reason == "unauthorized"
        assert_no_secret(caught.value, cln)
        assert cln.rune not in repr(cln.wallet)


async def test_a_slow_backend_times_out(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    async with running_cln(ledger, "payee", tls, tmp_path, timeout="0.3") as cln:
        cln.fake.faults.delay_s = 1.0
        with pytest.raises(WalletUnavailable) as caught:
            await cln.wallet.create_invoice(1_000, "m", 600, "k")
        assert caught.value.reason == "timeout"


async def test_lnd_and_cln_pay_each_other(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    macaroon = os.urandom(32)
    (tmp_path / "lnd.macaroon").write_bytes(macaroon)
    lnd = FakeLnd(ledger, "payer", macaroon)
    async with running_cln(ledger, "payee", tls, tmp_path) as cln, serve_app(lnd.app(), tls=tls.files) as url:
        payer = open_wallet(f"lnd+{url}?macaroon={tmp_path / 'lnd.macaroon'}&cert={tls.cert}", "--wallet")
        invoice = await cln.wallet.create_invoice(12_345, "node share", 600, "q1:node")
        payment = await payer.pay_invoice(invoice.bolt11, 2_000, "q1:node")
        status = await cln.wallet.lookup_invoice(invoice.payment_hash)
        assert status.state is InvoiceState.PAID and status.preimage == payment.preimage
        back = await payer.create_invoice(345, "refund", 600, "q1:refund")
        refund = await cln.wallet.pay_invoice(back.bolt11, 2_000, "q1:refund")
        assert (await payer.lookup_invoice(back.payment_hash)).preimage == refund.preimage
        await payer.aclose()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "'rune_file' is required"),
        ("rune_file=/no/such", "rune_file: /no/such is not a readable file"),
        ("rune_file={empty}", "is empty"),
        ("rune=inline&cert=/no/cert", "cert: /no/cert is not a readable file"),
        ("rune=inline&cert={empty}", "not a usable certificate"),
        ("rune=inline&pay_timeout=0", "pay_timeout must be between"),
    ],
)
def test_bad_cln_specs(tmp_path: Path, query: str, message: str) -> None:
    (tmp_path / "empty").write_text("")
    query = query.format(empty=tmp_path / "empty")
    with pytest.raises(WalletConfigError, match=message) as caught:
        open_wallet(f"clnrest+https://127.0.0.1:3010?{query}", "NODE_WALLET")
    assert str(caught.value).startswith("NODE_WALLET: clnrest+https wallet: ")
