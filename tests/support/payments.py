"""A paid quote for tests: router, node and client keys, each payee's own signed invoice (random preimages
standing in for a wallet's), the router-signed payment request and the client's proof."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field

from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import Payee, PayeeInvoice, PayeeRole, PaymentProof, PaymentRequest, decode_payload
from fedai.protocol.payment import QuoteTerms, seal_invoice, seal_payment_request

NOW = 1_800_000_000
TTL_S = 600


def new_preimage() -> tuple[str, str]:
    """(preimage, payment_hash) as a wallet makes them."""
    preimage = os.urandom(32)
    return preimage.hex(), hashlib.sha256(preimage).hexdigest()


def fake_bolt11() -> str:
    """A string with a BOLT-11's shape (lowercase, `ln` first); the protocol checks compare it, never decode it."""
    return "lnbcrt" + secrets.token_hex(60)


@dataclass
class Paid:
    """One quote paid to a node and the router's fee; `preimages` are what the client learnt by paying."""

    router: Keys = field(default_factory=Keys.generate)
    node: Keys = field(default_factory=Keys.generate)
    client: Keys = field(default_factory=Keys.generate)
    node_msat: int = 7_000
    fee_msat: int = 1_000
    quote_id: str = field(default_factory=lambda: secrets.token_hex(16))
    expires_at: int = NOW + TTL_S
    preimages: dict[str, str] = field(default_factory=dict)  # payment_hash → preimage
    event: Event | None = None

    def __post_init__(self) -> None:
        payees = [self.payee("node", self.node, self.node_msat)]
        if self.fee_msat:
            payees.append(self.payee("router_fee", self.router, self.fee_msat))
        self.event = self.sign(payees)

    @property
    def terms(self) -> QuoteTerms:
        total = self.node_msat + self.fee_msat
        return QuoteTerms(self.quote_id, self.node.pubkey, self.node_msat, self.fee_msat, total, self.expires_at)

    @property
    def request(self) -> Event:
        assert self.event is not None
        return self.event

    def invoice(self, role: PayeeRole, signer: Keys, amount: int, payment_hash: str, bolt11: str) -> Event:
        return seal_invoice(
            signer,
            PayeeInvoice(
                role=role,
                quote=self.quote_id,
                client=self.client.pubkey,
                router=self.router.pubkey,
                amount_msat=amount,
                payment_hash=payment_hash,
                bolt11=bolt11,
                expires_at=self.expires_at,
            ),
        )

    def payee(self, role: PayeeRole, keys: Keys, amount: int) -> Payee:
        """A payee entry whose invoice `keys` signed; remembers the preimage."""
        preimage, payment_hash = new_preimage()
        self.preimages[payment_hash] = preimage
        bolt11 = fake_bolt11()
        invoice = self.invoice(role, keys, amount, payment_hash, bolt11)
        return Payee(
            role=role, payee=keys.pubkey, amount_msat=amount, bolt11=bolt11, payment_hash=payment_hash, invoice=invoice
        )

    def sign(self, payees: list[Payee], *, signer: Keys | None = None, **changes: object) -> Event:
        """The router-signed payment request over `payees` (fields overridable for bad-input tests)."""
        fields: dict[str, object] = {
            "quote": self.quote_id,
            "client": self.client.pubkey,
            "router": self.router.pubkey,
            "expires_at": self.expires_at,
            "total_msat": sum(p.amount_msat for p in payees),
            "payees": payees,
        }
        fields.update(changes)
        return seal_payment_request(signer or self.router, PaymentRequest(**fields))  # type: ignore[arg-type]

    def proof(self, preimages: dict[str, str] | None = None) -> PaymentProof:
        return PaymentProof(payment_request=self.request.id, preimages=preimages or dict(self.preimages))

    def payees(self) -> list[Payee]:
        return decode_payload(self.request.content, PaymentRequest).payees

    def hash_of(self, role: str) -> str:
        return next(p.payment_hash for p in self.payees() if p.role == role)


__all__ = ["NOW", "Paid", "fake_bolt11", "new_preimage"]
