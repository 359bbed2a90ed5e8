"""The LNbits backend: one LNbits wallet over its REST API (docs/payments.md#lnbits).

The key decides what the wallet may do: the invoice key creates and looks up invoices, the admin key also
pays. Amounts: LNbits invoices whole satoshis, so an amount that is not a multiple of 1000 msat is refused
(`unsupported_amount`) rather than rounded: an invoice must be for exactly the share it is bound to.

Idempotency, as far as LNbits allows it:
- create: the key's sha256 goes into the invoice's `external_id`; before creating, this wallet's invoices with
  that `external_id` are searched, so a retry after a crash or a restart answers the same invoice. LNbits has
  no unique constraint on it, so two processes racing with one key could create two invoices: one process per
  wallet issues invoices (within one process, creates with the same key are serialised);
- pay: before paying, the payment hash is looked up in this wallet: an invoice it already paid answers the
  first payment, one in flight answers `WalletUnavailable` (`payment_pending`, ask again later), and LNbits
  itself refuses to pay one invoice twice. One key names one invoice: another invoice under a key already used
  is refused (`idempotency_conflict`).
- fees: LNbits takes no fee limit per payment; it caps a payment's routing fee at its fee reserve. The reserve
  for the invoice (`/api/v1/payments/fee-reserve`) is read first and the payment refused (`fee_limit`) when it
  exceeds `max_fee_msat`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from fedai.payments.backends.lnbits_http import LnbitsHttp
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.invoice import check_invoice, decode_invoice
from fedai.payments.secret import Secret
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

NAME = "lnbits"
DEFAULT_NETWORK = "bitcoin"  # FakeWallet and mainnet LNbits issue lnbc… invoices
MAX_MEMO = 640  # LNbits' own bound


class LnbitsBackend:
    """A `fedai.payments.wallet.Wallet` on one LNbits wallet (`url` its base URL, `key` its admin or invoice key)."""

    def __init__(
        self,
        url: str,
        key: Secret,
        *,
        network: str = DEFAULT_NETWORK,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.network = network
        self._http = LnbitsHttp(url, key, timeout=timeout, transport=transport)
        self._invoices: dict[str, Invoice] = {}  # idempotency key -> the invoice it made
        self._paid_keys: dict[str, str] = {}  # idempotency key -> the payment hash it paid
        self._create_lock = asyncio.Lock()
        self._pay_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"LnbitsBackend({self._http.origin!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- receiving ------------------------------------------------------------------------------------

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        _check_amount(amount_msat)
        if expiry_s <= 0 or len(memo) > MAX_MEMO or not idempotency_key:
            raise WalletRefused("LNbits: expiry must be positive, memo at most 640 characters, key given", "invalid")
        async with self._create_lock:
            known = self._invoices.get(idempotency_key)
            if known is None:
                external_id = _external_id(idempotency_key)
                known = await self._find_created(external_id) or await self._create(
                    amount_msat, memo, expiry_s, external_id
                )
                self._invoices[idempotency_key] = known
        if known.amount_msat != amount_msat:
            raise WalletRefused(
                "LNbits: this idempotency key made an invoice for another amount", "idempotency_conflict"
            )
        return known

    async def _find_created(self, external_id: str) -> Invoice | None:
        found = await self._http.get("/api/v1/payments", params={"external_id": external_id, "limit": 20})
        rows = found if isinstance(found, list) else []
        mine = [row for row in rows if isinstance(row, dict) and row.get("external_id") == external_id]
        incoming = [row for row in mine if _int(row.get("amount")) > 0]
        return self._invoice_from(incoming[0]) if incoming else None

    async def _create(self, amount_msat: int, memo: str, expiry_s: int, external_id: str) -> Invoice:
        body = {
            "out": False,
            "amount": amount_msat // 1000,
            "memo": memo,
            "expiry": expiry_s,
            "external_id": external_id,
        }
        return self._invoice_from(await self._http.post("/api/v1/payments", body), amount_msat)

    def _invoice_from(self, row: Any, amount_msat: int | None = None) -> Invoice:
        """An invoice LNbits answered, checked against its own BOLT11 (amount, hash, signature, network)."""
        if not isinstance(row, dict):
            raise WalletUnavailable("LNbits answered an invoice that is not an object", "bad_response")
        bolt11 = row.get("bolt11") or row.get("payment_request")
        payment_hash = row.get("payment_hash")
        amount = _int(row.get("amount"))
        if not isinstance(bolt11, str) or not is_hex32(payment_hash):
            raise WalletUnavailable("LNbits answered an invoice without bolt11 or payment hash", "bad_response")
        expected = amount if amount_msat is None else amount_msat  # a new invoice: exactly what was asked
        decoded = check_invoice(
            bolt11,
            amount_msat=expected,
            network=self.network,
            now=time.time(),
            payment_hash=payment_hash,
            min_expiry_s=0,
        )
        return Invoice(decoded.bolt11, decoded.payment_hash, decoded.amount_msat, decoded.expires_at)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        if not is_hex32(payment_hash):
            raise WalletRefused("LNbits: not a payment hash", "unknown_invoice")
        answer = await self._http.get(f"/api/v1/payments/{payment_hash}", missing="unknown_invoice")
        details = answer.get("details") if isinstance(answer, dict) else None
        if not isinstance(details, dict) or details.get("payment_hash") != payment_hash:
            raise WalletUnavailable("LNbits answered a lookup without the payment's details", "bad_response")
        if _int(details.get("amount")) <= 0:  # this wallet's own outgoing payment: not an invoice it created
            raise WalletRefused("LNbits: this wallet did not create that invoice", "unknown_invoice")
        if answer.get("paid") is not True:
            return InvoiceStatus(payment_hash, _unpaid_state(details))
        try:
            return InvoiceStatus(payment_hash, InvoiceState.PAID, _int(details.get("amount")), answer.get("preimage"))
        except ValueError:  # the status checks the preimage against the hash
            raise WalletUnavailable("LNbits answered a paid invoice without its preimage", "bad_response") from None

    # -- paying ---------------------------------------------------------------------------------------

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        decoded = decode_invoice(bolt11, network=self.network)
        payment_hash = decoded.payment_hash
        if self._paid_keys.setdefault(idempotency_key, payment_hash) != payment_hash:
            raise WalletRefused("LNbits: this idempotency key paid another invoice", "idempotency_conflict")
        lock = self._pay_locks.setdefault(payment_hash, asyncio.Lock())
        async with lock:
            earlier = await self.lookup_payment(payment_hash)
            if earlier is not None:
                return earlier
            await self._check_fee_reserve(decoded.bolt11, max_fee_msat)
            paid = await self._http.post("/api/v1/payments", {"out": True, "bolt11": decoded.bolt11}, paying=True)
        return _payment_from(paid, payment_hash)

    async def lookup_payment(self, payment_hash: str) -> Payment | None:
        """This wallet's payment of `payment_hash`: the payment if it succeeded, None if there is none or it failed.

        `WalletUnavailable` (`payment_pending`) while one is in flight.
        """
        answer = await self._http.get(f"/api/v1/payments/{payment_hash}", missing="none")
        details = answer.get("details") if isinstance(answer, dict) else None
        if not isinstance(details, dict) or _int(details.get("amount")) >= 0:
            return None  # unknown here, or an incoming invoice of this wallet (LNbits refuses paying it)
        if answer.get("paid") is True:
            paid = {"payment_hash": payment_hash, "status": "success", "preimage": answer.get("preimage")}
            return _payment_from(paid | {"fee": details.get("fee")}, payment_hash)
        if details.get("status") == "pending":
            raise WalletUnavailable(
                "LNbits: a payment of this invoice is in flight; ask again later", "payment_pending"
            )
        return None  # an earlier attempt failed: paying again is safe

    async def _check_fee_reserve(self, bolt11: str, max_fee_msat: int) -> None:
        answer = await self._http.get("/api/v1/payments/fee-reserve", params={"invoice": bolt11})
        reserve = _int(answer.get("fee_reserve")) if isinstance(answer, dict) else -1
        if reserve < 0:
            raise WalletUnavailable("LNbits answered no fee reserve", "bad_response")
        if reserve > max_fee_msat:
            raise WalletRefused(
                f"LNbits may spend up to {reserve} msat in fees on this invoice, over the {max_fee_msat} msat limit",
                "fee_limit",
            )

    async def balance_msat(self) -> int:
        answer = await self._http.get("/api/v1/wallet")
        balance = answer.get("balance") if isinstance(answer, dict) else None
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise WalletUnavailable("LNbits answered a wallet without a balance", "bad_response")
        return max(0, balance)


def _check_amount(amount_msat: int) -> None:
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat <= 0:
        raise WalletRefused("LNbits: an invoice needs a positive amount", "unsupported_amount")
    if amount_msat % 1000:
        raise WalletRefused(
            f"LNbits invoices whole satoshis; {amount_msat} msat is not a multiple of 1000", "unsupported_amount"
        )


def _external_id(idempotency_key: str) -> str:
    return "fedai:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    return 0


def _unpaid_state(details: dict[str, Any]) -> InvoiceState:
    if details.get("status") == "failed":
        return InvoiceState.FAILED
    expiry = details.get("expiry")
    try:
        expires = datetime.fromisoformat(str(expiry))
    except ValueError:
        return InvoiceState.PENDING
    if expires.tzinfo is None:  # LNbits writes UTC, with or without the offset
        expires = expires.replace(tzinfo=UTC)
    return InvoiceState.EXPIRED if expires.timestamp() <= time.time() else InvoiceState.PENDING


def _payment_from(answer: Any, payment_hash: str) -> Payment:
    if not isinstance(answer, dict) or answer.get("payment_hash") != payment_hash:
        raise WalletUnavailable("LNbits answered a payment for another hash", "bad_response")
    if answer.get("status") != "success":
        raise WalletRefused("LNbits: the payment did not succeed", "payment_failed")
    preimage = answer.get("preimage")
    if not is_hex32(preimage):
        raise WalletUnavailable("LNbits answered a payment without its preimage", "bad_response")
    try:
        return Payment(payment_hash, str(preimage), abs(_int(answer.get("fee"))))
    except ValueError:
        raise WalletUnavailable(
            "LNbits answered a preimage that does not match the payment hash", "bad_response"
        ) from None
