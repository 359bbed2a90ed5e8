"""LND through its REST API (docs/payments.md#lnd).

`lnd+https://host:8080?macaroon=/path/to/admin.macaroon&cert=/path/to/tls.cert[&timeout=10&pay_timeout=60]`.
The macaroon (binary file) goes hex-encoded in the `Grpc-Metadata-macaroon` header; the TLS certificate, LND's
self-signed one, is the only one trusted. Bytes fields (`r_hash`, `r_preimage`) come base64-encoded and are
turned into hex here; int64 fields come as strings. Tested against a server answering LND's documented shapes,
not against a real LND.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn

from fedai.payments.backends.guard import (
    BadReply,
    Idempotency,
    b64_hex,
    bad_reply,
    check_create,
    check_fee,
    check_key,
    hex32,
    integer,
    msat,
    text,
)
from fedai.payments.backends.http import Reply, RestClient, tls_context
from fedai.payments.errors import InvalidInvoice, WalletRefused, WalletUnavailable
from fedai.payments.invoice import decode_invoice
from fedai.payments.secret import Secret
from fedai.payments.spec import WalletSpec
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

MAX_REMEMBERED = 10_000
_FAILURES = {  # lnrpc.PaymentFailureReason → WalletRefused reason
    "FAILURE_REASON_NO_ROUTE": "no_route",
    "FAILURE_REASON_INSUFFICIENT_BALANCE": "insufficient_balance",
    "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS": "invoice_rejected",
}
_AUTH_WORDS = ("macaroon", "verification failed", "permission denied", "unauthenticated")
_ALREADY_WORDS = ("already paid", "already succeeded", "in transition", "in flight")


def _error_of(reply: Reply) -> str | None:
    """The message of an error answer (`{"code", "message"}` or a streamed `{"error": {...}}`), else None."""
    for document in reply.documents:
        if isinstance(document, dict):
            inner = document.get("error", document)
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return str(inner["message"])
    return None


class LndWallet:
    """A `Wallet` over one LND node's REST API."""

    def __init__(self, rest: RestClient, *, pay_timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self._rest = rest
        self._name = rest.name
        self._pay_timeout_s = pay_timeout_s
        self._clock = clock
        self._once = Idempotency(rest.name)
        self._invoices: OrderedDict[str, Invoice] = OrderedDict()

    def __repr__(self) -> str:
        return f"LndWallet({self._name!r})"

    def _raise(self, reply: Reply, doing: str) -> NoReturn:
        """The typed error for an answer that is not a success."""
        message = _error_of(reply)
        lowered = (message or "").lower()
        if reply.status in (401, 403) or any(word in lowered for word in _AUTH_WORDS):
            raise WalletUnavailable(f"{self._name}: credentials refused while trying to {doing}", "unauthorized")
        if reply.status >= 500 or message is None:
            raise WalletUnavailable(
                f"{self._name}: failed to {doing} (HTTP {reply.status})", "backend_error", detail=message
            )
        raise WalletRefused(f"{self._name}: refused to {doing} (HTTP {reply.status})", "rejected", detail=message)

    def _ok(self, reply: Reply, doing: str) -> dict[str, Any]:
        body = reply.body
        if reply.status != 200 or _error_of(reply) is not None:
            self._raise(reply, doing)
        if not isinstance(body, dict):
            raise WalletUnavailable(f"{self._name}: answered a non-object to {doing}", "bad_reply")
        return body

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        check_create(amount_msat, memo, expiry_s, idempotency_key)
        async with self._once.serialized(f"invoice:{idempotency_key}"):
            known = self._invoices.get(idempotency_key)
            if known is not None:
                if known.amount_msat != amount_msat:
                    raise WalletRefused(
                        f"{self._name}: idempotency key reused for another amount", "idempotency_conflict"
                    )
                return known
            body = {"value_msat": str(amount_msat), "memo": memo, "expiry": str(expiry_s)}
            answer = self._ok(await self._rest.call("POST", "/v1/invoices", body), "create an invoice")
            invoice = self._own_invoice(answer, amount_msat)
            self._invoices[idempotency_key] = invoice
            while len(self._invoices) > MAX_REMEMBERED:
                self._invoices.popitem(last=False)
            return invoice

    def _own_invoice(self, answer: dict[str, Any], amount_msat: int) -> Invoice:
        """The invoice LND just created, decoded and checked against what was asked."""
        try:
            payment_hash = b64_hex(answer.get("r_hash"), "r_hash")
            decoded = decode_invoice(text(answer.get("payment_request"), "payment_request"), network=None)
        except (BadReply, InvalidInvoice) as exc:
            raise bad_reply(self._name, ValueError(str(exc))) from None
        if decoded.payment_hash != payment_hash or decoded.amount_msat != amount_msat:
            raise WalletUnavailable(f"{self._name}: created an invoice that is not the one asked for", "bad_reply")
        return Invoice(decoded.bolt11, payment_hash, amount_msat, decoded.expires_at)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        payment_hash = payment_hash.lower()
        if not is_hex32(payment_hash):
            raise ValueError("payment_hash must be 32 bytes of hex")
        reply = await self._rest.call("GET", f"/v1/invoice/{payment_hash}")
        if reply.status == 404 or "unable to locate invoice" in (_error_of(reply) or ""):
            raise WalletRefused(f"{self._name}: no invoice with this payment hash", "unknown_invoice")
        answer = self._ok(reply, "look up an invoice")
        try:
            return self._status(answer, payment_hash)
        except ValueError as exc:  # BadReply, or a preimage that does not hash to the payment hash
            raise bad_reply(self._name, exc) from None

    def _status(self, answer: dict[str, Any], payment_hash: str) -> InvoiceStatus:
        if b64_hex(answer.get("r_hash"), "r_hash") != payment_hash:
            raise BadReply("r_hash is another invoice's")
        state = answer.get("state")
        if state == "SETTLED":
            preimage = b64_hex(answer.get("r_preimage"), "r_preimage")
            paid = msat(answer.get("amt_paid_msat"), "amt_paid_msat")
            return InvoiceStatus(payment_hash, InvoiceState.PAID, paid, preimage)
        expires_at = integer(answer.get("creation_date"), "creation_date") + integer(answer.get("expiry"), "expiry")
        past = expires_at <= self._clock()
        if state in ("OPEN", "ACCEPTED"):
            return InvoiceStatus(
                payment_hash, InvoiceState.EXPIRED if past and state == "OPEN" else InvoiceState.PENDING
            )
        if state == "CANCELED":
            return InvoiceStatus(payment_hash, InvoiceState.EXPIRED if past else InvoiceState.FAILED)
        raise BadReply("state is not OPEN, SETTLED, CANCELED or ACCEPTED")

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        check_fee(max_fee_msat)
        check_key(idempotency_key)
        invoice = decode_invoice(bolt11, network=None)
        if invoice.amount_msat == 0:
            raise InvalidInvoice("no_amount", "invoice names no amount")
        self._once.bind(idempotency_key, invoice.payment_hash)
        async with self._once.serialized(invoice.payment_hash):
            body = {
                "payment_request": invoice.bolt11,
                "fee_limit_msat": str(max_fee_msat),
                "timeout_seconds": max(1, int(self._pay_timeout_s)),
                "no_inflight_updates": True,
            }
            reply = await self._rest.call("POST", "/v2/router/send", body, timeout_s=self._pay_timeout_s + 10)
            if any(word in (_error_of(reply) or "").lower() for word in _ALREADY_WORDS):
                reply = await self._track(invoice.payment_hash)  # paid or paying already: its outcome, never twice
            return self._payment(reply, invoice.payment_hash)

    async def _track(self, payment_hash: str) -> Reply:
        path_hash = base64.urlsafe_b64encode(bytes.fromhex(payment_hash)).decode()
        return await self._rest.call(
            "GET", f"/v2/router/track/{path_hash}?no_inflight_updates=true", timeout_s=self._pay_timeout_s + 10
        )

    def _payment(self, reply: Reply, payment_hash: str) -> Payment:
        """The final update of a payment stream as a Payment, or the typed error of its failure."""
        if reply.status != 200 or _error_of(reply) is not None:
            self._raise(reply, "pay an invoice")
        updates = [d["result"] for d in reply.documents if isinstance(d, dict) and isinstance(d.get("result"), dict)]
        if not updates:
            raise WalletUnavailable(f"{self._name}: answered no payment update", "bad_reply")
        last = updates[-1]
        try:
            return self._settled(last, payment_hash)
        except ValueError as exc:
            raise bad_reply(self._name, exc) from None

    def _settled(self, update: dict[str, Any], payment_hash: str) -> Payment:
        if hex32(update.get("payment_hash"), "payment_hash") != payment_hash:
            raise BadReply("payment_hash is another payment's")
        status = update.get("status")
        if status == "SUCCEEDED":
            preimage = hex32(update.get("payment_preimage"), "payment_preimage")
            return Payment(payment_hash, preimage, msat(update.get("fee_msat", 0), "fee_msat"))
        if status == "FAILED":
            reason = _FAILURES.get(str(update.get("failure_reason")), "payment_failed")
            raise WalletRefused(
                f"{self._name}: the payment failed ({reason})", reason, detail=str(update.get("failure_reason"))
            )
        raise WalletUnavailable(
            f"{self._name}: the payment is still in flight; pay again to learn its outcome", "in_flight"
        )

    async def balance_msat(self) -> int:
        answer = self._ok(await self._rest.call("GET", "/v1/balance/channels"), "read the balance")
        local = answer.get("local_balance")
        try:
            return msat(local.get("msat") if isinstance(local, dict) else None, "local_balance.msat")
        except BadReply as exc:
            raise bad_reply(self._name, exc) from None

    async def aclose(self) -> None:
        await self._rest.aclose()


def open_lnd(spec: WalletSpec) -> LndWallet:
    """An LndWallet from `lnd+https://host:port?macaroon=…&cert=…` (factory for fedai.payments.config)."""
    macaroon_path = spec.path_param("macaroon", "the path of an LND macaroon file, e.g. admin.macaroon")
    try:
        macaroon = macaroon_path.read_bytes()
    except OSError as exc:
        raise spec.error(f"macaroon: cannot read {macaroon_path} ({type(exc).__name__})") from None
    if not macaroon:
        raise spec.error(f"macaroon: {macaroon_path} is empty")
    cert = spec.path_param("cert", "the path of LND's tls.cert") if spec.param("cert") else None
    try:
        verify = tls_context(cert)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise spec.error(f"cert: {cert} is not a usable certificate ({type(exc).__name__})") from None
    if not spec.host:
        raise spec.error("the URI names no host")
    rest = RestClient(
        f"lnd at {spec.host}:{spec.port or 443}",
        spec.base_url,
        headers={"Grpc-Metadata-macaroon": Secret(macaroon.hex())},
        verify=verify,
        timeout_s=spec.seconds("timeout", 10.0),
    )
    return LndWallet(rest, pay_timeout_s=spec.seconds("pay_timeout", 60.0))
