"""What a wallet raises: typed errors a service answers as-is (docs/payments.md#wallets).

Messages name the backend and what went wrong, never a secret (macaroon, rune, key, NWC secret) nor a full URI.
What the backend itself said is kept apart in `detail` (bounded, for the operator's logs), never in the message a
service sends back.
"""

from __future__ import annotations

from fedai.protocol.errors import ErrorCode, FedaiError

UNAVAILABLE_RETRY_MS = 2_000  # what a 503 `payment_backend_unavailable` suggests as Retry-After
MAX_DETAIL = 200


def _bounded(detail: str | None) -> str | None:
    if detail is None:
        return None
    printable = "".join(c if c.isprintable() else " " for c in detail)
    return printable[:MAX_DETAIL]


class WalletError(FedaiError):
    """Base of every wallet error; `reason` is a short machine-readable word."""

    def __init__(
        self, code: ErrorCode, message: str, reason: str, retry_after_ms: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(code, message, retry_after_ms)
        self.reason = reason
        self.detail = _bounded(detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class WalletUnavailable(WalletError):
    """The backend is down, slow, answered 5xx, refused our credentials or answered something unreadable (503).

    Reasons: `timeout`, `unreachable`, `unauthorized`, `backend_error`, `bad_reply`, `in_flight` (a payment
    whose outcome is not known yet: paying the same invoice again answers it, never pays twice).
    """

    def __init__(self, message: str, reason: str = "unavailable", detail: str | None = None) -> None:
        super().__init__(ErrorCode.PAYMENT_BACKEND_UNAVAILABLE, message, reason, UNAVAILABLE_RETRY_MS, detail)


class WalletRefused(WalletError):
    """The backend answered and said no: insufficient balance, no route, invoice rejected, key reused (402).

    Reasons: `insufficient_balance`, `no_route`, `invoice_rejected`, `fee_limit`, `idempotency_conflict`,
    `payment_failed`, `unknown_invoice` (a lookup of an invoice this wallet did not create), `rejected` (any
    other refusal of a request).
    """

    def __init__(self, message: str, reason: str, detail: str | None = None) -> None:
        super().__init__(ErrorCode.PAYMENT_REFUSED, message, reason, detail=detail)


class InvalidInvoice(WalletError):
    """A BOLT11 invoice that fails a check (400); `reason` says which (fedai.payments.invoice.REASONS)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_INVOICE, message, reason)
