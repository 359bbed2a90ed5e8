"""The LND backend against a server answering LND's documented REST shapes over TLS on 127.0.0.1.

Invoices are real BOLT11 signed by the fake node's key; preimages are real; a small in-memory ledger moves the
money, so a test can count payments. Not a real LND: docs/payments.md#lnd says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedai.payments.backends.lnd import LndWallet
from fedai.payments.config import open_wallet
from fedai.payments.errors import InvalidInvoice, WalletRefused, WalletUnavailable
from fedai.payments.spec import WalletConfigError
from fedai.payments.wallet import InvoiceState, Wallet
from tests.support.fake_lnd import Lnd, running_lnd
from tests.support.lightning import Ledger
from tests.support.servers import free_port
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("lnd-tls"))


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.add_node("payee", balance_msat=0)
    ledger.add_node("payer", balance_msat=5_000_000)
    return ledger


@pytest.fixture
async def pair(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[tuple[Lnd, Lnd]]:
    async with (
        running_lnd(ledger, "payee", tls, tmp_path) as payee,
        running_lnd(ledger, "payer", tls, tmp_path) as payer,
    ):
        yield payee, payer


def assert_no_secret(exc: BaseException, lnd: Lnd) -> None:
    shown = f"{exc} {exc!r} {getattr(exc, 'detail', '')} {getattr(exc, 'to_dict', dict)()}"
    assert lnd.macaroon.hex() not in shown


async def test_invoice_paid_and_proven(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, payer = pair
    assert isinstance(payee.wallet, LndWallet) and isinstance(payee.wallet, Wallet)
    invoice = await payee.wallet.create_invoice(21_000, "node share", 600, "req-1:node")
    assert payee.fake.seen_bodies[-1] == {"value_msat": "21000", "memo": "node share", "expiry": "600"}
    kept = ledger.invoices[invoice.payment_hash]  # r_hash (base64) decoded to the very hash the node holds
    assert invoice.bolt11 == kept.bolt11 and invoice.amount_msat == 21_000
    assert invoice.expires_at == kept.created_at + 600
    pending = await payee.wallet.lookup_invoice(invoice.payment_hash)
    assert pending.state is InvoiceState.PENDING and pending.preimage is None  # LND shows r_preimage; not trusted
    payment = await payer.wallet.pay_invoice(invoice.bolt11, 5_000, "req-1:pay-node")
    assert payer.fake.seen_bodies[-1]["fee_limit_msat"] == "5000"
    assert payment.preimage == kept.preimage and payment.fee_msat == ledger.fee_base_msat
    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == invoice.payment_hash
    paid = await payee.wallet.lookup_invoice(invoice.payment_hash.upper())
    assert paid.state is InvoiceState.PAID and paid.preimage == kept.preimage and paid.amount_msat == 21_000
    assert await payee.wallet.balance_msat() == 21_000
    assert await payer.wallet.balance_msat() == 5_000_000 - 21_000 - ledger.fee_base_msat


async def test_payment_hashes_with_base64_padding_and_symbols_decode_right(
    pair: tuple[Lnd, Lnd], ledger: Ledger
) -> None:
    payee, _ = pair
    for n in range(20):
        invoice = await payee.wallet.create_invoice(1_000 + n, "m", 600, f"k{n}")
        assert invoice.payment_hash in ledger.invoices
        status = await payee.wallet.lookup_invoice(invoice.payment_hash)
        assert status.payment_hash == invoice.payment_hash


async def test_create_is_idempotent_per_key(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, _ = pair
    first, again = await asyncio.gather(
        payee.wallet.create_invoice(5_000, "m", 600, "key-a"), payee.wallet.create_invoice(5_000, "m", 600, "key-a")
    )
    assert first == again and len(ledger.invoices) == 1
    with pytest.raises(WalletRefused) as conflict:
        await payee.wallet.create_invoice(6_000, "m", 600, "key-a")
    assert conflict.value.reason == "idempotency_conflict" and len(ledger.invoices) == 1


async def test_paying_twice_pays_once(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, payer = pair
    invoice = await payee.wallet.create_invoice(30_000, "m", 600, "k")
    results = await asyncio.gather(*(payer.wallet.pay_invoice(invoice.bolt11, 2_000, "pay-k") for _ in range(4)))
    assert len({r.preimage for r in results}) == 1 and len(ledger.payments) == 1
    # another key for the same invoice (as after a restart: nothing remembered here) meets LND's "already paid",
    # and the wallet tracks the first payment instead of paying again
    again = await payer.wallet.pay_invoice(invoice.bolt11, 2_000, "pay-k-after-restart")
    assert again == results[0] and len(ledger.payments) == 1
    assert ledger.nodes["payer"].balance_msat == 5_000_000 - 30_000 - ledger.fee_base_msat


async def test_one_key_for_two_invoices_is_refused_before_paying(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, payer = pair
    first = await payee.wallet.create_invoice(1_000, "m", 600, "a")
    second = await payee.wallet.create_invoice(2_000, "m", 600, "b")
    await payer.wallet.pay_invoice(first.bolt11, 2_000, "refund-7")
    with pytest.raises(WalletRefused) as caught:
        await payer.wallet.pay_invoice(second.bolt11, 2_000, "refund-7")
    assert caught.value.reason == "idempotency_conflict" and len(ledger.payments) == 1


async def test_payment_failures_are_refusals(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, payer = pair
    expensive = await payee.wallet.create_invoice(10_000_000, "m", 600, "big")
    with pytest.raises(WalletRefused) as poor:
        await payer.wallet.pay_invoice(expensive.bolt11, 5_000, "p1")
    assert poor.value.reason == "insufficient_balance" and poor.value.status == 402
    cheap = await payee.wallet.create_invoice(1_000, "m", 600, "small")
    with pytest.raises(WalletRefused) as fee:
        await payer.wallet.pay_invoice(cheap.bolt11, ledger.fee_base_msat - 1, "p2")
    assert fee.value.reason == "no_route"
    stranger, _, _ = ledger.nodes["payee"].signer.invoice(1_000)  # signed, but no node knows it
    with pytest.raises(WalletRefused) as unknown:
        await payer.wallet.pay_invoice(stranger, 5_000, "p3")
    assert unknown.value.reason == "no_route" and ledger.payments == []


async def test_bad_invoices_are_refused_before_any_request(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    _, payer = pair
    seen = payer.fake.faults.requests
    no_amount, _, _ = ledger.nodes["payee"].signer.invoice(None)
    for bolt11, reason in [("lnbcrt1garbage", "malformed"), (no_amount, "no_amount"), ("x" * 5000, "too_long")]:
        with pytest.raises(InvalidInvoice) as caught:
            await payer.wallet.pay_invoice(bolt11, 1_000, "k")
        assert caught.value.reason == reason
    assert payer.fake.faults.requests == seen


async def test_lookup_states(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
    payee, _ = pair
    with pytest.raises(WalletRefused) as unknown:
        await payee.wallet.lookup_invoice(os.urandom(32).hex())
    assert unknown.value.reason == "unknown_invoice"
    invoice = await payee.wallet.create_invoice(1_000, "m", 600, "k")
    ledger.invoices[invoice.payment_hash].state = "canceled"
    assert (await payee.wallet.lookup_invoice(invoice.payment_hash)).state is InvoiceState.FAILED
    ledger.invoices[invoice.payment_hash].created_at -= 601
    assert (await payee.wallet.lookup_invoice(invoice.payment_hash)).state is InvoiceState.EXPIRED
    ledger.invoices[invoice.payment_hash].state = "open"  # an open invoice past its expiry: LND answers CANCELED
    assert (await payee.wallet.lookup_invoice(invoice.payment_hash)).state is InvoiceState.EXPIRED
    with pytest.raises(ValueError, match="32 bytes"):
        await payee.wallet.lookup_invoice("abc")


async def test_a_wrong_preimage_from_the_backend_is_not_a_proof(pair: tuple[Lnd, Lnd], ledger: Ledger) -> None:
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
        (500, b'{"code": 2, "message": "some internal failure", "details": []}', "backend_error"),
        (503, b"", "backend_error"),
        (502, b"<html>bad gateway</html>", "bad_reply"),
        (200, b"{not json", "bad_reply"),
        (200, b"[1, 2]", "bad_reply"),
        (200, b"[" * 100_000 + b"]" * 100_000, "bad_reply"),
        (200, b'{"r_hash": "AAAA", "payment_request": "lnbcrt1x"}', "bad_reply"),
        (302, b"", "bad_reply"),
        (401, b"", "unauthorized"),
    ],
)
async def test_faults_are_unavailable(pair: tuple[Lnd, Lnd], status: int, body: bytes, reason: str) -> None:
    payee, _ = pair
    payee.fake.faults.status, payee.fake.faults.body = status, body
    for call in (payee.wallet.create_invoice(1_000, "m", 600, "k"), payee.wallet.balance_msat()):
        with pytest.raises(WalletUnavailable) as caught:
            await call
        assert caught.value.reason == reason, caught.value
        assert caught.value.status == 503 and caught.value.code == "payment_backend_unavailable"
        assert_no_secret(caught.value, payee)


async def test_the_macaroon_stays_out_of_debug_logs(pair: tuple[Lnd, Lnd], caplog: pytest.LogCaptureFixture) -> None:
    payee, payer = pair
    with caplog.at_level(logging.DEBUG):
        invoice = await payee.wallet.create_invoice(1_000, "m", 600, "k")
        await payer.wallet.pay_invoice(invoice.bolt11, 5_000, "k")
    assert "HTTP Request" in caplog.text  # httpx did log the requests
    assert payee.macaroon.hex() not in caplog.text and payer.macaroon.hex() not in caplog.text


async def test_a_wrong_macaroon_is_unavailable_and_never_shown(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    async with running_lnd(ledger, "payee", tls, tmp_path) as lnd:
        lnd.fake.macaroon_hex = os.urandom(48).hex()  # the node now expects another macaroon
        with pytest.raises(WalletUnavailable) as caught:
            await lnd.wallet.create_invoice(1_000, "m", 600, "k")
        assert caught.value.reason == "unauthorized"
        assert_no_secret(caught.value, lnd)
        assert lnd.macaroon.hex() not in repr(lnd.wallet)


async def test_a_slow_backend_times_out(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    async with running_lnd(ledger, "payee", tls, tmp_path, timeout="0.3") as lnd:
        lnd.fake.faults.delay_s = 1.0
        with pytest.raises(WalletUnavailable) as caught:
            await lnd.wallet.balance_msat()
        assert caught.value.reason == "timeout"


async def test_tls_is_verified_against_the_configured_cert(ledger: Ledger, tls: SelfSigned, tmp_path: Path) -> None:
    other = self_signed(tmp_path, "other")
    async with running_lnd(ledger, "payee", tls, tmp_path, cert=str(other.cert)) as lnd:
        with pytest.raises(WalletUnavailable) as caught:
            await lnd.wallet.balance_msat()
        assert caught.value.reason == "unreachable" and lnd.fake.faults.requests == 0


async def test_a_backend_that_is_down(tls: SelfSigned, tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"\x02\x01")
    wallet = open_wallet(f"lnd+https://127.0.0.1:{free_port()}?macaroon={tmp_path / 'm'}&cert={tls.cert}")
    with pytest.raises(WalletUnavailable) as caught:
        await wallet.balance_msat()
    assert caught.value.reason == "unreachable"
    await wallet.aclose()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "'macaroon' is required"),
        ("macaroon=/no/such", "macaroon: /no/such is not a readable file"),
        ("macaroon={empty}", "is empty"),
        ("macaroon={mac}&cert={empty}", "not a usable certificate"),
        ("macaroon={mac}&cert=/no/cert", "cert: /no/cert is not a readable file"),
        ("macaroon={mac}&timeout=-1", "timeout must be between"),
    ],
)
def test_bad_lnd_specs(tmp_path: Path, query: str, message: str) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "mac").write_bytes(b"\x02secret-macaroon")
    query = query.format(empty=tmp_path / "empty", mac=tmp_path / "mac")
    with pytest.raises(WalletConfigError, match=message) as caught:
        open_wallet(f"lnd+https://127.0.0.1:8080?{query}", "ROUTER_WALLET")
    assert str(caught.value).startswith("ROUTER_WALLET: lnd+https wallet: ")
    assert b"secret-macaroon".hex() not in str(caught.value)
