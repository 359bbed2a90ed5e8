"""What every `fedai.payments.wallet.Wallet` must do, as one check any backend's tests can run on two wallets
that can pay each other (LND and Core Lightning here; the LNbits and NWC backends the same way).

`check_wallet_contract(payee, payer, network=…)` creates, looks up, pays and looks up again, and checks on the
way: exact amounts, a checkable invoice, the same invoice for the same key, a conflict for the key reused, a
proof that hashes to the payment hash and that the payee's wallet reports too, a payment never made twice
(same key, another key, the payer's balance counted), a key reused for another invoice refused before paying,
and an unknown payment hash refused.
"""

from __future__ import annotations

import os
import time

import pytest

from fedai.payments.errors import WalletRefused
from fedai.payments.invoice import check_invoice
from fedai.payments.wallet import InvoiceState, Wallet, preimage_matches

AMOUNT_MSAT = 21_000
MAX_FEE_MSAT = 5_000


async def check_wallet_contract(payee: Wallet, payer: Wallet, *, network: str, prefix: str = "contract") -> None:
    key = f"{prefix}-{os.urandom(4).hex()}"
    invoice = await payee.create_invoice(AMOUNT_MSAT, "fedai contract", 600, f"{key}:invoice")
    decoded = check_invoice(
        invoice.bolt11, amount_msat=AMOUNT_MSAT, network=network, now=time.time(), payment_hash=invoice.payment_hash
    )
    assert invoice.amount_msat == AMOUNT_MSAT and abs(invoice.expires_at - decoded.expires_at) <= 1
    assert await payee.create_invoice(AMOUNT_MSAT, "fedai contract", 600, f"{key}:invoice") == invoice
    with pytest.raises(WalletRefused) as conflict:
        await payee.create_invoice(AMOUNT_MSAT + 1, "fedai contract", 600, f"{key}:invoice")
    assert conflict.value.reason == "idempotency_conflict"

    pending = await payee.lookup_invoice(invoice.payment_hash)
    assert pending.state is InvoiceState.PENDING and pending.preimage is None

    before = await payer.balance_msat()
    payment = await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, f"{key}:pay")
    assert payment.payment_hash == invoice.payment_hash and preimage_matches(payment.preimage, invoice.payment_hash)
    assert 0 <= payment.fee_msat <= MAX_FEE_MSAT
    paid = await payee.lookup_invoice(invoice.payment_hash)
    assert paid.state is InvoiceState.PAID and paid.preimage == payment.preimage and paid.amount_msat == AMOUNT_MSAT

    assert await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, f"{key}:pay") == payment
    assert (await payer.pay_invoice(invoice.bolt11, MAX_FEE_MSAT, f"{key}:pay-again")).preimage == payment.preimage
    assert before - await payer.balance_msat() == AMOUNT_MSAT + payment.fee_msat  # paid once, whatever was asked

    other = await payee.create_invoice(1_000, "fedai contract", 600, f"{key}:other")
    with pytest.raises(WalletRefused) as reused:
        await payer.pay_invoice(other.bolt11, MAX_FEE_MSAT, f"{key}:pay")
    assert reused.value.reason == "idempotency_conflict"
    assert (await payee.lookup_invoice(other.payment_hash)).state is InvoiceState.PENDING

    with pytest.raises(WalletRefused) as unknown:
        await payee.lookup_invoice(os.urandom(32).hex())
    assert unknown.value.reason == "unknown_invoice"
