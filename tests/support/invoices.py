"""BOLT11 invoices made and signed here with a throwaway key, for the invoice checks and the fake wallets."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import bolt11
from bolt11.models.tags import TagChar, Tags
from coincurve import PrivateKey


@dataclass
class InvoiceSigner:
    """A Lightning node identity that signs invoices; `pubkey` is its compressed key (hex)."""

    secret: bytes = field(default_factory=lambda: os.urandom(32))
    date: int | None = None  # the date of invoices that name none (None: the time they are made)

    @property
    def pubkey(self) -> str:
        return PrivateKey(self.secret).public_key.format(compressed=True).hex()

    def invoice(
        self,
        amount_msat: int | None,
        *,
        preimage: str | None = None,
        currency: str = "bcrt",
        date: int | None = None,
        expiry: int = 3600,
        description: str = "fedai test",
        include_payee: bool = False,
        payee_override: str | None = None,
    ) -> tuple[str, str, str]:
        """(bolt11, payment_hash, preimage) of a new signed invoice (`payee_override`: an `n` field naming
        another key than the signer's, to test that the signature is checked against it)."""
        preimage = preimage or os.urandom(32).hex()
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        tags = Tags()
        tags.add(TagChar.payment_hash, payment_hash)
        tags.add(TagChar.payment_secret, os.urandom(32).hex())
        tags.add(TagChar.description, description)
        tags.add(TagChar.expire_time, expiry)
        tags.add(TagChar.min_final_cltv_expiry, 18)
        if include_payee:
            tags.add(TagChar.payee, payee_override or self.pubkey)
        invoice = bolt11.Bolt11(
            currency=currency,
            date=date if date is not None else self.date if self.date is not None else int(time.time()),
            tags=tags,
            amount_msat=bolt11.MilliSatoshi(amount_msat) if amount_msat else None,
        )
        text = bolt11.encode(invoice, self.secret.hex(), keep_payee=include_payee)
        return text, payment_hash, preimage
