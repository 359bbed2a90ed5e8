"""The one wallet interface every backend implements, and the values it returns (docs/payments.md#wallets).

A payee creates invoices in its own wallet and looks them up by payment hash; a payer pays invoices from its own
wallet. Hashes and preimages are lowercase hex (32 bytes); amounts are millisatoshis; times are Unix seconds.
The values check themselves when built: a preimage must hash to its payment hash, so a backend that answers a
wrong one fails loudly instead of handing out a false proof.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

_HEX = frozenset("0123456789abcdef")


class InvoiceState(StrEnum):
    """An incoming invoice as the payee's wallet sees it."""

    PENDING = "pending"  # open, not paid (also: HTLCs accepted but not settled)
    PAID = "paid"  # settled: the wallet holds the preimage
    EXPIRED = "expired"  # past its expiry, never paid
    FAILED = "failed"  # cancelled or otherwise dead


def is_hex32(value: object) -> bool:
    """True for 64 lowercase hex characters (a payment hash or a preimage)."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def preimage_matches(preimage: str, payment_hash: str) -> bool:
    """True when sha256(preimage) is the payment hash: the proof of payment."""
    if not (is_hex32(preimage) and is_hex32(payment_hash)):
        return False
    return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash


def _check_hash(payment_hash: str) -> None:
    if not is_hex32(payment_hash):
        raise ValueError("payment_hash must be 64 lowercase hex characters")


def _check_msat(amount_msat: int, name: str) -> None:
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat < 0:
        raise ValueError(f"{name} must be a non-negative integer")


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice the payee's wallet created."""

    bolt11: str
    payment_hash: str
    amount_msat: int
    expires_at: int

    def __post_init__(self) -> None:
        _check_hash(self.payment_hash)
        _check_msat(self.amount_msat, "amount_msat")
        if not self.bolt11:
            raise ValueError("bolt11 must not be empty")


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    """An incoming invoice looked up by its payment hash; `preimage` and `amount_msat` (received) when paid."""

    payment_hash: str
    state: InvoiceState
    amount_msat: int = 0
    preimage: str | None = None

    def __post_init__(self) -> None:
        _check_hash(self.payment_hash)
        _check_msat(self.amount_msat, "amount_msat")
        if self.state is InvoiceState.PAID:
            if self.preimage is None or not preimage_matches(self.preimage, self.payment_hash):
                raise ValueError("a paid invoice needs the preimage of its payment hash")
        elif self.preimage is not None and not preimage_matches(self.preimage, self.payment_hash):
            raise ValueError("preimage does not match the payment hash")


@dataclass(frozen=True, slots=True)
class Payment:
    """An outgoing payment that succeeded: the preimage is the proof."""

    payment_hash: str
    preimage: str
    fee_msat: int

    def __post_init__(self) -> None:
        _check_hash(self.payment_hash)
        _check_msat(self.fee_msat, "fee_msat")
        if not preimage_matches(self.preimage, self.payment_hash):
            raise ValueError("preimage does not match the payment hash")


@runtime_checkable
class Wallet(Protocol):
    """A Lightning wallet of one party. Its methods raise fedai.payments.errors.WalletError subclasses, and
    ValueError for arguments no backend should be sent (a non-positive amount, a hash that is not 32 bytes)."""

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        """A new invoice for exactly `amount_msat`; the same key again answers the same invoice, never a second."""
        ...

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        """The state of an invoice this wallet created (WalletRefused `unknown_invoice` for another's)."""
        ...

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        """Pay `bolt11` with at most `max_fee_msat` in fees; never twice for one key or one payment hash.

        Paying again an invoice this wallet already paid answers the first payment. The caller checks the
        invoice first (fedai.payments.invoice.check_invoice) and records the key durably before calling.
        """
        ...

    async def balance_msat(self) -> int:
        """What this wallet can spend now, in millisatoshis."""
        ...

    async def aclose(self) -> None:
        """Release connections; the wallet is not used afterwards."""
        ...
