"""Typed protocol errors: one code, one HTTP status, one machine-readable name (docs/decisions.md#errors)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    INVALID_REQUEST = "invalid_request"
    TOO_LARGE = "too_large"
    INVALID_SIGNATURE = "invalid_signature"
    UNAUTHORIZED = "unauthorized"
    # NIP-98 (HTTP auth) failures: always 401 with WWW-Authenticate, one code per check
    INVALID_AUTH = "invalid_auth"  # not `Nostr <base64 event>`, not an event, too large, wrong kind, id mismatch
    AUTH_URL_MISMATCH = "auth_url_mismatch"  # the `u` tag names another URL (another router, path or query)
    AUTH_METHOD_MISMATCH = "auth_method_mismatch"
    AUTH_PAYLOAD_MISMATCH = "auth_payload_mismatch"  # body without `payload` tag, or its sha256 differs
    AUTH_NOT_CONFIGURED = "auth_not_configured"  # NIP-98 needs ROUTER_PUBLIC_URL on this router
    STALE = "stale"
    EXPIRED = "expired"
    REPLAY = "replay"
    WRONG_RECIPIENT = "wrong_recipient"
    FORBIDDEN = "forbidden"
    UNKNOWN_MODEL = "unknown_model"
    NOT_FOUND = "not_found"
    QUOTE_INVALID = "quote_invalid"
    RATE_LIMITED = "rate_limited"
    CAPACITY_EXCEEDED = "capacity_exceeded"
    NO_CAPACITY = "no_capacity"
    PAYMENT_REQUIRED = "payment_required"
    PAYMENT_REFUSED = "payment_refused"  # a wallet answered no: insufficient balance, no route, invoice rejected
    INVALID_INVOICE = "invalid_invoice"  # a BOLT11 invoice failed a check (malformed, network, amount, expiry)
    PAYMENT_BACKEND_UNAVAILABLE = "payment_backend_unavailable"  # a wallet backend is down, slow or unreadable
    # payments (docs/payments.md#protocol-and-claims)
    PAYMENT_INVALID = "payment_invalid"  # the payment request or proof does not prove this request was paid
    PAYMENT_EXPIRED = "payment_expired"  # the payment request is past its expiry: ask for a new one
    PAYMENT_USED = "payment_used"  # the proof was consumed by a request already served
    PAYMENT_IN_USE = "payment_in_use"  # the proof is claimed by a request in flight: retry after it ends
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UNAVAILABLE = "unavailable"  # its database is down or restarting, or it is draining: retry after Retry-After
    INTERNAL = "internal"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_EVENT: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_AUTH: 401,
    ErrorCode.AUTH_URL_MISMATCH: 401,
    ErrorCode.AUTH_METHOD_MISMATCH: 401,
    ErrorCode.AUTH_PAYLOAD_MISMATCH: 401,
    ErrorCode.AUTH_NOT_CONFIGURED: 401,
    ErrorCode.STALE: 401,
    ErrorCode.EXPIRED: 401,
    ErrorCode.REPLAY: 409,
    ErrorCode.WRONG_RECIPIENT: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.QUOTE_INVALID: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CAPACITY_EXCEEDED: 429,
    ErrorCode.NO_CAPACITY: 503,
    ErrorCode.PAYMENT_REQUIRED: 402,
    ErrorCode.PAYMENT_REFUSED: 402,
    ErrorCode.INVALID_INVOICE: 400,
    ErrorCode.PAYMENT_BACKEND_UNAVAILABLE: 503,
    ErrorCode.PAYMENT_INVALID: 402,
    ErrorCode.PAYMENT_EXPIRED: 402,
    ErrorCode.PAYMENT_USED: 409,
    ErrorCode.PAYMENT_IN_USE: 409,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class FedaiError(Exception):
    """An error with a protocol code. Services turn it into `{"error": {...}}` with the code's status."""

    def __init__(self, code: ErrorCode | str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        return {"error": body}

    @classmethod
    def from_dict(cls, data: Any, status: int | None = None) -> FedaiError:
        """Rebuild an error from a peer's JSON body; anything unrecognisable becomes `upstream_error`."""
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), str) and err["code"] in ErrorCode._value2member_map_:
            retry = err.get("retry_after_ms")
            return cls(
                err["code"],
                str(err.get("message", "")),
                int(retry) if isinstance(retry, int | float) and not isinstance(retry, bool) else None,
            )
        return cls(ErrorCode.UPSTREAM_ERROR, f"unrecognised error body (HTTP {status})")

    def __repr__(self) -> str:
        return f"FedaiError({self.code.value!r}, {self.message!r})"


class KeyFormatError(ValueError):
    """A key string that is not valid hex or NIP-19 bech32 of the expected kind."""
