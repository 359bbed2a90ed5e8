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
  first payment, one in flight answers `WalletUnavailable` (`in_flight`, ask again later), and LNbits
  itself refuses to pay one invoice twice. One key names one invoice: another invoice under a key already used
  is refused (`idempotency_conflict`).
- fees: LNbits takes no fee limit per payment; it caps a payment's routing fee at its fee reserve. The reserve
  for the invoice (`/api/v1/payments/fee-reserve`) is read first and the payment refused (`fee_limit`) when it
  exceeds `max_fee_msat`.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from fedai.payments.backends.guard import Idempotency, check_create, check_fee, check_key
from fedai.payments.backends.http import RestClient, tls_context
from fedai.payments.backends.lnbits_http import LnbitsHttp
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.invoice import check_invoice, decode_invoice
from fedai.payments.spec import WalletSpec
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

DEFAULT_NETWORK = "bitcoin"  # FakeWallet and mainnet LNbits issue lnbc… invoices
DEFAULT_TIMEOUT_S = 10.0
MADE_LIMIT = 10_000  # invoices remembered by key in this process (LNbits remembers them all, by external_id)


class LnbitsBackend:
    """A `fedai.payments.wallet.Wallet` on one LNbits wallet (`open_lnbits` builds one from its spec)."""

    def __init__(self, rest: RestClient, *, network: str = DEFAULT_NETWORK) -> None:
        self.network = network
        self._http = LnbitsHttp(rest)
        self._name = rest.name
        self._invoices: Idempotency = Idempotency(rest.name)  # creates: key -> amount, one at a time per key
        self._once = Idempotency(rest.name)  # payments: key -> payment hash, one at a time per hash
        self._made: dict[str, Invoice] = {}

    def __repr__(self) -> str:
        return f"LnbitsBackend({self._name!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- receiving ------------------------------------------------------------------------------------

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        check_create(amount_msat, memo, expiry_s, idempotency_key)
        self._invoices.bind(idempotency_key, str(amount_msat))
        if amount_msat % 1000:
            raise WalletRefused(
                f"{self._name}: LNbits invoices whole satoshis; {amount_msat} msat is not a multiple of 1000",
                "unsupported_amount",
            )
        async with self._invoices.serialized(idempotency_key):
            known = self._made.get(idempotency_key)
            if known is None:
                external_id = _external_id(idempotency_key)
                known = await self._find_created(external_id) or await self._create(
                    amount_msat, memo, expiry_s, external_id
                )
                if len(self._made) >= MADE_LIMIT:
                    self._made.pop(next(iter(self._made)))
                self._made[idempotency_key] = known
        if known.amount_msat != amount_msat:
            raise WalletRefused(f"{self._name}: this idempotency key made another invoice", "idempotency_conflict")
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
            raise WalletUnavailable(f"{self._name}: answered an invoice that is not an object", "bad_reply")
        bolt11 = row.get("bolt11") or row.get("payment_request")
        payment_hash = row.get("payment_hash")
        amount = _int(row.get("amount"))
        if not isinstance(bolt11, str) or not is_hex32(payment_hash):
            raise WalletUnavailable(f"{self._name}: answered an invoice without bolt11 or payment hash", "bad_reply")
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
            raise ValueError("payment_hash must be 64 lowercase hex characters")
        answer = await self._http.get(f"/api/v1/payments/{payment_hash}", missing="unknown_invoice")
        details = answer.get("details") if isinstance(answer, dict) else None
        if not isinstance(details, dict) or details.get("payment_hash") != payment_hash:
            raise WalletUnavailable(f"{self._name}: answered a lookup without the payment's details", "bad_reply")
        if _int(details.get("amount")) <= 0:  # this wallet's own outgoing payment: not an invoice it created
            raise WalletRefused(f"{self._name}: this wallet did not create that invoice", "unknown_invoice")
        if answer.get("paid") is not True:
            return InvoiceStatus(payment_hash, _unpaid_state(details))
        try:
            return InvoiceStatus(payment_hash, InvoiceState.PAID, _int(details.get("amount")), answer.get("preimage"))
        except ValueError:  # the status checks the preimage against the hash
            raise WalletUnavailable(
                f"{self._name}: answered a paid invoice without its preimage", "bad_reply"
            ) from None

    # -- paying ---------------------------------------------------------------------------------------

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        check_fee(max_fee_msat)
        check_key(idempotency_key)
        decoded = decode_invoice(bolt11, network=self.network)
        payment_hash = decoded.payment_hash
        self._once.bind(idempotency_key, payment_hash)
        async with self._once.serialized(payment_hash):
            earlier = await self.lookup_payment(payment_hash)
            if earlier is not None:
                return earlier
            await self._check_fee_reserve(decoded.bolt11, max_fee_msat)
            paid = await self._http.post("/api/v1/payments", {"out": True, "bolt11": decoded.bolt11}, paying=True)
        return self._payment_from(paid, payment_hash)

    async def lookup_payment(self, payment_hash: str) -> Payment | None:
        """This wallet's payment of `payment_hash`: the payment if it succeeded, None if there is none or it failed.

        `WalletUnavailable` (`in_flight`) while one is in flight.
        """
        answer = await self._http.get(f"/api/v1/payments/{payment_hash}", missing="none")
        details = answer.get("details") if isinstance(answer, dict) else None
        if not isinstance(details, dict) or _int(details.get("amount")) >= 0:
            return None  # unknown here, or an incoming invoice of this wallet (LNbits refuses paying it)
        if answer.get("paid") is True:
            paid = {"payment_hash": payment_hash, "status": "success", "preimage": answer.get("preimage")}
            return self._payment_from(paid | {"fee": details.get("fee")}, payment_hash)
        if details.get("status") == "pending":
            raise WalletUnavailable(f"{self._name}: a payment of this invoice is in flight", "in_flight")
        return None  # an earlier attempt failed: paying again is safe

    async def _check_fee_reserve(self, bolt11: str, max_fee_msat: int) -> None:
        answer = await self._http.get("/api/v1/payments/fee-reserve", params={"invoice": bolt11})
        reserve = _int(answer.get("fee_reserve")) if isinstance(answer, dict) else -1
        if reserve < 0:
            raise WalletUnavailable(f"{self._name}: answered no fee reserve", "bad_reply")
        if reserve > max_fee_msat:
            raise WalletRefused(
                f"{self._name}: LNbits may spend up to {reserve} msat in fees here, over the {max_fee_msat} limit",
                "fee_limit",
            )

    async def balance_msat(self) -> int:
        answer = await self._http.get("/api/v1/wallet")
        balance = answer.get("balance") if isinstance(answer, dict) else None
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise WalletUnavailable(f"{self._name}: answered a wallet without a balance", "bad_reply")
        return max(0, balance)

    def _payment_from(self, answer: Any, payment_hash: str) -> Payment:
        if not isinstance(answer, dict) or answer.get("payment_hash") != payment_hash:
            raise WalletUnavailable(f"{self._name}: answered a payment for another hash", "bad_reply")
        if answer.get("status") != "success":
            raise WalletRefused(f"{self._name}: the payment did not succeed", "payment_failed")
        try:
            return Payment(payment_hash, str(answer.get("preimage")), abs(_int(answer.get("fee"))))
        except ValueError:
            raise WalletUnavailable(f"{self._name}: answered a preimage that does not match", "bad_reply") from None


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


def open_lnbits(spec: WalletSpec) -> LnbitsBackend:
    """An LnbitsBackend from `lnbits+http(s)://host:port[/prefix]?key=…|key_file=…` (factory for config)."""
    if not spec.host:
        raise spec.error("the URI names no host (lnbits+https://host:port?key_file=…)")
    key = spec.secret("key", "key_file", "the wallet's admin key (pays), or its invoice key (only receives)")
    cert = spec.path_param("cert", "the CA certificate LNbits' TLS chains to") if spec.param("cert") else None
    try:
        verify = tls_context(cert)
    except (OSError, ValueError) as exc:
        raise spec.error(f"cert: {cert} is not a usable certificate ({type(exc).__name__})") from None
    rest = RestClient(
        f"lnbits at {spec.host}:{spec.port or (443 if spec.transport == 'https' else 80)}",
        spec.base_url,
        headers={"X-Api-Key": key},
        verify=verify,
        timeout_s=spec.seconds("timeout", DEFAULT_TIMEOUT_S),
    )
    return LnbitsBackend(rest, network=spec.param("network", DEFAULT_NETWORK) or DEFAULT_NETWORK)
