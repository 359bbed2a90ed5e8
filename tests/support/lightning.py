"""A tiny Lightning network in memory for the fake LND and Core Lightning servers: nodes with balances that sign
real BOLT11 invoices (tests/support/invoices.py) and pay each other's, revealing real preimages. Every payment
that moved money is recorded, so a test can count that nothing was paid twice."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from fedai.payments.invoice import decode_invoice
from tests.support.invoices import InvoiceSigner


@dataclass
class LedgerInvoice:
    node: str
    bolt11: str
    payment_hash: str
    preimage: str
    amount_msat: int
    memo: str
    created_at: int
    expiry: int
    label: str = ""
    state: str = "open"  # open | settled | canceled
    paid_msat: int = 0
    paid_at: int = 0

    @property
    def expired(self) -> bool:
        return self.state == "open" and time.time() >= self.created_at + self.expiry


@dataclass
class LedgerPayment:
    payer: str
    payment_hash: str
    amount_msat: int
    fee_msat: int
    preimage: str


@dataclass
class LightningNode:
    name: str
    balance_msat: int
    signer: InvoiceSigner = field(default_factory=InvoiceSigner)


class PayFailure(Exception):
    """Why a payment failed: one of no_route, fee, insufficient_balance, incorrect_details, expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Ledger:
    fee_base_msat: int = 1_000
    nodes: dict[str, LightningNode] = field(default_factory=dict)
    invoices: dict[str, LedgerInvoice] = field(default_factory=dict)
    payments: list[LedgerPayment] = field(default_factory=list)
    pays_twice: bool = False  # a broken network that forgets what was paid (to show the contract catches it)

    def add_node(self, name: str, balance_msat: int = 10_000_000) -> LightningNode:
        self.nodes[name] = LightningNode(name, balance_msat)
        return self.nodes[name]

    def create_invoice(self, node: str, amount_msat: int, memo: str, expiry: int, label: str = "") -> LedgerInvoice:
        preimage = os.urandom(32).hex()
        now = int(time.time())
        bolt11, payment_hash, _ = self.nodes[node].signer.invoice(
            amount_msat, preimage=preimage, date=now, expiry=expiry, description=memo or "fedai"
        )
        invoice = LedgerInvoice(node, bolt11, payment_hash, preimage, amount_msat, memo, now, expiry, label)
        self.invoices[payment_hash] = invoice
        return invoice

    def paid_by(self, payer: str, payment_hash: str) -> LedgerPayment | None:
        return next((p for p in self.payments if p.payer == payer and p.payment_hash == payment_hash), None)

    def pay(self, payer: str, bolt11: str, max_fee_msat: int) -> LedgerPayment:
        """Pay from `payer`; the earlier payment when `payer` already paid it; PayFailure otherwise."""
        decoded = decode_invoice(bolt11, network=None)
        earlier = self.paid_by(payer, decoded.payment_hash)
        if earlier is not None and not self.pays_twice:
            return earlier
        invoice = self.invoices.get(decoded.payment_hash)
        if invoice is None or invoice.node == payer:
            raise PayFailure("no_route")
        if invoice.expired or invoice.state == "canceled":
            raise PayFailure("expired")
        if invoice.state == "settled" and not self.pays_twice:
            raise PayFailure("incorrect_details")
        fee = self.fee_base_msat
        if fee > max_fee_msat:
            raise PayFailure("fee")
        source = self.nodes[payer]
        if source.balance_msat < invoice.amount_msat + fee:
            raise PayFailure("insufficient_balance")
        source.balance_msat -= invoice.amount_msat + fee
        self.nodes[invoice.node].balance_msat += invoice.amount_msat
        invoice.state, invoice.paid_msat, invoice.paid_at = "settled", invoice.amount_msat, int(time.time())
        payment = LedgerPayment(payer, invoice.payment_hash, invoice.amount_msat, fee, invoice.preimage)
        self.payments.append(payment)
        return payment


@dataclass
class Faults:
    """What a fake wallet server does instead of answering: wait first, or answer `status` with `body`."""

    delay_s: float = 0.0
    status: int | None = None
    body: bytes = b""
    tamper_preimage: bool = False  # answer a preimage that does not hash to the payment hash
    requests: int = 0  # requests seen (counted whatever the fault)
