"""The NWC backend (NIP-47 over the embedded relay) against wallet services that run on real LNbits wallets.

The client under test is the real one (`NwcBackend`, fedai's relay pool, rust-nostr's ciphers); the wallet
service is a test fixture (tests/support/nwc_service.py) answering from an LNbits wallet through the LNbits
backend, so invoices, preimages and balances are LNbits' own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fedai.llamacpp.server import free_port
from fedai.lnbits import LnbitsWallet
from fedai.payments.backends.lnbits import open_lnbits
from fedai.payments.backends.nwc import NwcBackend
from fedai.payments.backends.nwc_uri import NwcUri
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.secret import Secret
from fedai.payments.spec import parse_spec
from fedai.payments.wallet import InvoiceState, Wallet
from fedai.protocol.keys import Keys
from tests.support.nwc_service import NwcService
from tests.support.wallet_contract import check_wallet_contract

pytestmark = pytest.mark.integration

MAX_FEE_MSAT = 50_000
Connect = Callable[..., Awaitable[tuple[NwcService, NwcBackend]]]


def key() -> str:
    return os.urandom(8).hex()


@pytest.fixture
async def connect(relay_url: str, lnbits_wallet: Callable[..., LnbitsWallet]) -> AsyncIterator[Connect]:
    """`connect(sats, encryptions=…, wait_s=…)`: an LNbits wallet with `sats`, its NWC service, a client on it."""
    opened: list[Any] = []

    async def make(sats: int = 0, *, encryptions: tuple[str, ...] = ("nip44_v2", "nip04"), wait_s: float = 20):
        made = lnbits_wallet("nwc", sats)
        lnbits = open_lnbits(parse_spec(made.uri()))
        service = await NwcService(relay_url, lnbits, encryptions=encryptions).start()
        client = NwcBackend(service.uri, timeout=wait_s)
        opened.extend([client, service, lnbits])
        return service, client

    yield make
    for thing in opened:
        await (thing.stop() if isinstance(thing, NwcService) else thing.aclose())


async def test_an_invoice_made_over_nwc_is_paid_over_nwc_with_its_preimage(connect: Connect) -> None:
    payee_service, payee = await connect(encryptions=("nip44_v2", "nip04"))
    payer_service, payer = await connect(1000, encryptions=("nip04",))
    assert isinstance(payee, Wallet)
    invoice = await payee.create_invoice(21_000, "over nwc", 600, key())
    assert (await payee.lookup_invoice(invoice.payment_hash)).state is InvoiceState.PENDING

    payment = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())

    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == invoice.payment_hash
    status = await payee.lookup_invoice(invoice.payment_hash)
    assert (status.state, status.amount_msat, status.preimage) == (InvoiceState.PAID, 21_000, payment.preimage)
    assert await payee.balance_msat() == 21_000
    assert await payer.balance_msat() == 1_000_000 - 21_000
    assert set(payee_service.encryptions_seen) == {"nip44_v2"}  # offered by the service's info event
    assert set(payer_service.encryptions_seen) == {"nip04"}  # no encryption tag: NIP-04


async def test_the_wallet_contract_holds_over_nwc_and_across_nwc_and_lnbits(
    connect: Connect, lnbits_wallet: Callable[..., LnbitsWallet]
) -> None:
    _, payee = await connect()
    _, payer = await connect(1000)
    await check_wallet_contract(payee, payer, network="bitcoin", prefix="nwc")
    direct = open_lnbits(parse_spec(lnbits_wallet("direct", 1000).uri()))
    try:
        await check_wallet_contract(payee, direct, network="bitcoin", prefix="nwc-payee")
        await check_wallet_contract(direct, payer, network="bitcoin", prefix="nwc-payer")
    finally:
        await direct.aclose()


async def test_paying_again_pays_once_even_from_a_new_connection(connect: Connect) -> None:
    _, payee = await connect()
    payer_service, payer = await connect(1000)
    invoice = await payee.create_invoice(4_000, "once", 600, key())
    paying = key()
    first = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, paying)
    assert await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, paying) == first
    fresh = NwcBackend(payer_service.uri, timeout=20)  # no memory of the first payment: asks the wallet
    try:
        assert await fresh.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key()) == first
    finally:
        await fresh.aclose()
    assert await payer.balance_msat() == 1_000_000 - 4_000


async def test_insufficient_balance_is_refused(connect: Connect) -> None:
    _, payee = await connect()
    _, payer = await connect(10)
    invoice = await payee.create_invoice(20_000, "too much", 600, key())
    with pytest.raises(WalletRefused) as refused:
        await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, key())
    assert refused.value.reason == "insufficient_balance"
    assert await payer.balance_msat() == 10_000


async def test_an_unknown_payment_hash_is_refused(connect: Connect) -> None:
    _, wallet = await connect()
    with pytest.raises(WalletRefused) as refused:
        await wallet.lookup_invoice(os.urandom(32).hex())
    assert refused.value.reason == "unknown_invoice"


async def test_a_key_the_service_did_not_authorise_is_unavailable(connect: Connect) -> None:
    service, _ = await connect()
    stranger = NwcUri(service.keys.pubkey, service.uri.relays, Secret(Keys.generate().secret_hex))
    wallet = NwcBackend(stranger, timeout=20)
    try:
        with pytest.raises(WalletUnavailable) as unavailable:
            await wallet.balance_msat()
        assert unavailable.value.reason == "unauthorized"
    finally:
        await wallet.aclose()


async def test_a_stopped_wallet_service_is_unavailable_after_the_timeout(connect: Connect) -> None:
    service, wallet = await connect(wait_s=2)
    assert await wallet.balance_msat() == 0
    await service.stop()
    with pytest.raises(WalletUnavailable) as unavailable:
        await wallet.balance_msat()
    assert unavailable.value.reason == "timeout"


async def test_an_unreachable_relay_is_unavailable() -> None:
    uri = NwcUri(Keys.generate().pubkey, (f"ws://127.0.0.1:{free_port()}",), Secret(Keys.generate().secret_hex))
    wallet = NwcBackend(uri, timeout=1)
    try:
        with pytest.raises(WalletUnavailable) as unavailable:
            await wallet.balance_msat()
        assert unavailable.value.reason == "unreachable"
        assert uri.secret.reveal() not in str(unavailable.value)
    finally:
        await wallet.aclose()
