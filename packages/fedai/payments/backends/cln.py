"""Core Lightning through clnrest (docs/payments.md#core-lightning).

`clnrest+https://host:3010?rune_file=/path/to/rune[&cert=/path/to/ca.pem&timeout=10&pay_timeout=60]` (or
`rune=…` inline, from a JSON spec file). Every call is `POST /v1/<method>` with a JSON body and the `Rune`
header; success is 201 (200 accepted) with the method's result, failure 500 with `{"code", "message"}`, 401 or
403 for a refused rune. The invoice label is the idempotency key, so the same key answers the same invoice, across
restarts too; `pay` with a bolt11 already paid answers the first payment. Tested against a server answering
clnrest's documented shapes, not against a real Core Lightning.
"""

from __future__ import annotations

from typing import Any, NoReturn

from fedai.payments.backends.guard import (
    BadReply,
    Idempotency,
    bad_reply,
    check_create,
    check_fee,
    check_key,
    hex32,
    msat,
    text,
)
from fedai.payments.backends.http import Reply, RestClient, tls_context
from fedai.payments.errors import InvalidInvoice, WalletRefused, WalletUnavailable
from fedai.payments.invoice import decode_invoice
from fedai.payments.spec import WalletSpec
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

DUPLICATE_LABEL = 900
PAY_IN_PROGRESS = 200
_PAY_FAILURES = {201: "invoice_rejected", 203: "invoice_rejected", 205: "no_route", 206: "fee_limit"}
_PAY_FAILURES |= {207: "invoice_rejected", 210: "payment_failed"}
_STATES = {"unpaid": InvoiceState.PENDING, "paid": InvoiceState.PAID, "expired": InvoiceState.EXPIRED}


def _error_of(reply: Reply) -> tuple[int | None, str | None]:
    """(code, message) of an RPC error answer."""
    body = reply.body
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (code if isinstance(code, int) else None), (message if isinstance(message, str) else None)


class ClnWallet:
    """A `Wallet` over one Core Lightning node's clnrest."""

    def __init__(self, rest: RestClient, *, pay_timeout_s: float) -> None:
        self._rest = rest
        self._name = rest.name
        self._pay_timeout_s = pay_timeout_s
        self._once = Idempotency(rest.name)

    def __repr__(self) -> str:
        return f"ClnWallet({self._name!r})"

    async def _rpc(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Reply:
        reply = await self._rest.call("POST", f"/v1/{method}", params, timeout_s=timeout_s)
        if reply.status in (401, 403):
            raise WalletUnavailable(f"{self._name}: rune refused for {method}", "unauthorized")
        return reply

    def _raise(self, reply: Reply, method: str) -> NoReturn:
        code, message = _error_of(reply)
        if reply.status == 500 and code is not None and code > 0:
            raise WalletRefused(f"{self._name}: {method} refused (code {code})", "rejected", detail=message)
        raise WalletUnavailable(f"{self._name}: {method} failed (HTTP {reply.status})", "backend_error", detail=message)

    def _result(self, reply: Reply, method: str) -> dict[str, Any]:
        if reply.status not in (200, 201):
            self._raise(reply, method)
        if not isinstance(reply.body, dict):
            raise WalletUnavailable(f"{self._name}: {method} answered a non-object", "bad_reply")
        return reply.body

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        check_create(amount_msat, memo, expiry_s, idempotency_key)
        params = {"amount_msat": amount_msat, "label": idempotency_key, "description": memo, "expiry": expiry_s}
        reply = await self._rpc("invoice", params)
        if reply.status == 500 and _error_of(reply)[0] == DUPLICATE_LABEL:
            return await self._existing(idempotency_key, amount_msat)
        answer = self._result(reply, "invoice")
        invoice = self._own_invoice(answer)
        if invoice.amount_msat != amount_msat:
            raise WalletUnavailable(f"{self._name}: created an invoice for another amount", "bad_reply")
        return invoice

    async def _existing(self, label: str, amount_msat: int) -> Invoice:
        """The invoice created earlier under this label (the idempotency key)."""
        answer = self._result(await self._rpc("listinvoices", {"label": label}), "listinvoices")
        invoices = answer.get("invoices")
        if not isinstance(invoices, list) or len(invoices) != 1 or not isinstance(invoices[0], dict):
            raise WalletUnavailable(f"{self._name}: a duplicate label that listinvoices does not show", "bad_reply")
        invoice = self._own_invoice(invoices[0])
        if invoice.amount_msat != amount_msat:
            raise WalletRefused(f"{self._name}: idempotency key reused for another amount", "idempotency_conflict")
        return invoice

    def _own_invoice(self, answer: dict[str, Any]) -> Invoice:
        """The invoice in an `invoice` or `listinvoices` answer, decoded and checked against its payment hash."""
        try:
            payment_hash = hex32(answer.get("payment_hash"), "payment_hash")
            decoded = decode_invoice(text(answer.get("bolt11"), "bolt11"), network=None)
        except (BadReply, InvalidInvoice) as exc:
            raise bad_reply(self._name, ValueError(str(exc))) from None
        if decoded.payment_hash != payment_hash or decoded.amount_msat == 0:
            raise WalletUnavailable(f"{self._name}: answered an invoice that is not the one asked for", "bad_reply")
        return Invoice(decoded.bolt11, payment_hash, decoded.amount_msat, decoded.expires_at)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        payment_hash = payment_hash.lower()
        if not is_hex32(payment_hash):
            raise ValueError("payment_hash must be 32 bytes of hex")
        answer = self._result(await self._rpc("listinvoices", {"payment_hash": payment_hash}), "listinvoices")
        invoices = answer.get("invoices")
        if invoices == []:
            raise WalletRefused(f"{self._name}: no invoice with this payment hash", "unknown_invoice")
        try:
            if not isinstance(invoices, list) or not isinstance(invoices[0], dict):
                raise BadReply("invoices is not a list of objects")
            return self._status(invoices[0], payment_hash)
        except ValueError as exc:  # BadReply, or a preimage that does not hash to the payment hash
            raise bad_reply(self._name, exc) from None

    def _status(self, entry: dict[str, Any], payment_hash: str) -> InvoiceStatus:
        if hex32(entry.get("payment_hash"), "payment_hash") != payment_hash:
            raise BadReply("payment_hash is another invoice's")
        state = _STATES.get(str(entry.get("status")))
        if state is None:
            raise BadReply("status is not unpaid, paid or expired")
        if state is not InvoiceState.PAID:
            return InvoiceStatus(payment_hash, state)
        preimage = hex32(entry.get("payment_preimage"), "payment_preimage")
        received = msat(entry.get("amount_received_msat"), "amount_received_msat")
        return InvoiceStatus(payment_hash, state, received, preimage)

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        check_fee(max_fee_msat)
        check_key(idempotency_key)
        invoice = decode_invoice(bolt11, network=None)
        if invoice.amount_msat == 0:
            raise InvalidInvoice("no_amount", "invoice names no amount")
        self._once.bind(idempotency_key, invoice.payment_hash)
        params = {"bolt11": invoice.bolt11, "maxfee": max_fee_msat, "retry_for": max(1, int(self._pay_timeout_s))}
        async with self._once.serialized(invoice.payment_hash):
            reply = await self._rpc("pay", params, timeout_s=self._pay_timeout_s + 10)
        if reply.status == 500:
            self._pay_failed(reply)
        answer = self._result(reply, "pay")
        try:
            return self._payment(answer, invoice.payment_hash)
        except ValueError as exc:
            raise bad_reply(self._name, exc) from None

    def _pay_failed(self, reply: Reply) -> NoReturn:
        code, message = _error_of(reply)
        if code == PAY_IN_PROGRESS:
            raise WalletUnavailable(
                f"{self._name}: the payment is in flight; pay again to learn its outcome", "in_flight"
            )
        if code is None or code < 0:
            self._raise(reply, "pay")
        reason = _PAY_FAILURES.get(code, "payment_failed")
        if "insufficient" in (message or "").lower():
            reason = "insufficient_balance"
        raise WalletRefused(f"{self._name}: the payment failed ({reason}, code {code})", reason, detail=message)

    def _payment(self, answer: dict[str, Any], payment_hash: str) -> Payment:
        if hex32(answer.get("payment_hash"), "payment_hash") != payment_hash:
            raise BadReply("payment_hash is another payment's")
        status = answer.get("status")
        if status == "pending":
            raise WalletUnavailable(
                f"{self._name}: the payment is in flight; pay again to learn its outcome", "in_flight"
            )
        if status != "complete":
            raise WalletRefused(f"{self._name}: the payment failed", "payment_failed", detail=str(status))
        preimage = hex32(answer.get("payment_preimage"), "payment_preimage")
        fee = msat(answer.get("amount_sent_msat"), "amount_sent_msat") - msat(answer.get("amount_msat"), "amount_msat")
        return Payment(payment_hash, preimage, max(fee, 0))

    async def balance_msat(self) -> int:
        answer = self._result(await self._rpc("listfunds", {}), "listfunds")
        channels = answer.get("channels")
        try:
            if not isinstance(channels, list):
                raise BadReply("channels is not a list")
            return sum(
                msat(c.get("our_amount_msat"), "our_amount_msat")
                for c in channels
                if isinstance(c, dict) and c.get("state") == "CHANNELD_NORMAL"
            )
        except BadReply as exc:
            raise bad_reply(self._name, exc) from None

    async def aclose(self) -> None:
        await self._rest.aclose()


def open_cln(spec: WalletSpec) -> ClnWallet:
    """A ClnWallet from `clnrest+https://host:port?rune_file=…` (factory for fedai.payments.config)."""
    rune = spec.secret("rune", "rune_file", "a file holding a Core Lightning rune (`lightning-cli createrune`)")
    cert = spec.path_param("cert", "the CA certificate clnrest's TLS chains to") if spec.param("cert") else None
    try:
        verify = tls_context(cert)
    except (OSError, ValueError) as exc:
        raise spec.error(f"cert: {cert} is not a usable certificate ({type(exc).__name__})") from None
    if not spec.host:
        raise spec.error("the URI names no host")
    rest = RestClient(
        f"clnrest at {spec.host}:{spec.port or 443}",
        spec.base_url,
        headers={"Rune": rune},
        verify=verify,
        timeout_s=spec.seconds("timeout", 10.0),
    )
    return ClnWallet(rest, pay_timeout_s=spec.seconds("pay_timeout", 60.0))
