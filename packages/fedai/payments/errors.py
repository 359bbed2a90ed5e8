"""What a wallet raises: typed errors a service answers as-is (docs/payments.md#wallets).

Messages name the backend and what went wrong, never a secret (macaroon, rune, key, NWC secret) nor a full URI.
"""

from __future__ import annotations

from fedai.protocol.errors import ErrorCode, FedaiError

UNAVAILABLE_RETRY_MS = 2_000  # what a 503 `payment_backend_unavailable` suggests as Retry-After


class WalletError(FedaiError):
    """Base of every wallet error; `reason` is a short machine-readable word."""

    def __init__(self, code: ErrorCode, message: str, reason: str, retry_after_ms: int | None = None) -> None:
        super().__init__(code, message, retry_after_ms)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class WalletUnavailable(WalletError):
    """The backend is down, slow, answered 5xx, refused our credentials or answered something unreadable (503)."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(ErrorCode.PAYMENT_BACKEND_UNAVAILABLE, message, reason, UNAVAILABLE_RETRY_MS)


class WalletRefused(WalletError):
    """The backend answered and said no: insufficient balance, no route, invoice rejected, key reused (402).

    Reasons: `insufficient_balance`, `no_route`, `invoice_rejected`, `fee_limit`, `idempotency_conflict`,
    `payment_failed`, `unknown_invoice` (a lookup of an invoice this wallet did not create).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(ErrorCode.PAYMENT_REFUSED, message, reason)


class InvalidInvoice(WalletError):
    """A BOLT11 invoice that fails a check (400); `reason` says which (fedai.payments.invoice.REASONS)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_INVOICE, message, reason)
