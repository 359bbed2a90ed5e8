"""The NWC backend: a wallet reached through Nostr Wallet Connect (NIP-47) over relays (docs/payments.md#nwc).

`make_invoice`, `lookup_invoice`, `pay_invoice` and `get_balance` requests go to the wallet service named by
the connection URI (`fedai.payments.backends.nwc_uri`) through `NwcClient`, with fedai's relay pool and
rust-nostr's ciphers, rather than nostr-sdk's own NWC client: the pool verifies every event and bounds what
relays send, a timeout is ours to set, and NIP-47's error codes reach us as codes (`WalletRefused` /
`WalletUnavailable` by `fedai.payments.backends.nip47`), not as the text of an exception.

What NIP-47 does not give, and what is done instead:
- no idempotency key: created invoices are remembered per key in this process (a retry after a restart makes a
  second invoice; the unpaid one expires), and before paying, the payment hash is looked up in the wallet:
  an invoice already paid answers the first payment, one in flight answers `WalletUnavailable`;
- no fee limit per payment: the connection's budget, set in the wallet, bounds what it may spend; a payment
  whose `fees_paid` went over `max_fee_msat` is logged (the money has moved by then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fedai.payments.backends.nwc_client import DEFAULT_TIMEOUT_S, NwcClient
from fedai.payments.backends.nwc_uri import NwcUri
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.invoice import check_invoice, decode_invoice
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

log = logging.getLogger("fedai.payments.nwc")

DEFAULT_NETWORK = "bitcoin"


class NwcBackend:
    """A `fedai.payments.wallet.Wallet` on a wallet service reached by a NIP-47 connection."""

    def __init__(self, uri: NwcUri, *, network: str = DEFAULT_NETWORK, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.network = network
        self._client = NwcClient(uri, timeout=timeout)
        self._invoices: dict[str, Invoice] = {}
        self._paid_keys: dict[str, str] = {}
        self._create_lock = asyncio.Lock()
        self._pay_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"NwcBackend(wallet={self._client.uri.wallet_pubkey[:12]}…)"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat <= 0 or expiry_s <= 0:
            raise WalletRefused("NWC: an invoice needs a positive amount and expiry", "unsupported_amount")
        async with self._create_lock:
            known = self._invoices.get(idempotency_key)
            if known is None:
                params = {"amount": amount_msat, "description": memo, "expiry": expiry_s}
                result = await self._client.request("make_invoice", params)
                known = self._invoice_from(result, amount_msat)
                self._invoices[idempotency_key] = known
        if known.amount_msat != amount_msat:
            raise WalletRefused("NWC: this idempotency key made an invoice for another amount", "idempotency_conflict")
        return known

    def _invoice_from(self, result: dict[str, Any], amount_msat: int) -> Invoice:
        bolt11 = result.get("invoice")
        payment_hash = result.get("payment_hash")
        if not isinstance(bolt11, str):
            raise WalletUnavailable("NWC make_invoice: the result has no invoice", "bad_response")
        decoded = check_invoice(
            bolt11,
            amount_msat=amount_msat,
            network=self.network,
            now=time.time(),
            payment_hash=payment_hash if isinstance(payment_hash, str) else None,
            min_expiry_s=0,
        )
        return Invoice(decoded.bolt11, decoded.payment_hash, decoded.amount_msat, decoded.expires_at)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        if not is_hex32(payment_hash):
            raise WalletRefused("NWC: not a payment hash", "unknown_invoice")
        result = await self._lookup(payment_hash)
        if result.get("type") == "outgoing":
            raise WalletRefused("NWC: this wallet did not create that invoice", "unknown_invoice")
        preimage = result.get("preimage")
        if result.get("settled_at") and is_hex32(preimage):
            return InvoiceStatus(payment_hash, InvoiceState.PAID, _msat(result.get("amount")), str(preimage))
        return InvoiceStatus(payment_hash, _unpaid_state(result))

    async def _lookup(self, payment_hash: str) -> dict[str, Any]:
        result = await self._client.request("lookup_invoice", {"payment_hash": payment_hash})
        if result.get("payment_hash") != payment_hash:
            raise WalletUnavailable("NWC lookup_invoice: the result is for another payment hash", "bad_response")
        return result

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        decoded = decode_invoice(bolt11, network=self.network)
        payment_hash = decoded.payment_hash
        if self._paid_keys.setdefault(idempotency_key, payment_hash) != payment_hash:
            raise WalletRefused("NWC: this idempotency key paid another invoice", "idempotency_conflict")
        async with self._pay_locks.setdefault(payment_hash, asyncio.Lock()):
            earlier = await self._earlier_payment(payment_hash)
            if earlier is not None:
                return earlier
            result = await self._client.request("pay_invoice", {"invoice": decoded.bolt11})
        payment = _payment_from(result, payment_hash)
        if payment.fee_msat > max_fee_msat:
            log.warning(
                "NWC payment %s… paid %d msat in fees, over the limit of %d",
                payment_hash[:12],
                payment.fee_msat,
                max_fee_msat,
            )
        return payment

    async def _earlier_payment(self, payment_hash: str) -> Payment | None:
        try:
            result = await self._lookup(payment_hash)
        except WalletRefused as exc:
            if exc.reason == "unknown_invoice":
                return None  # never paid from this wallet
            raise
        if result.get("type") != "outgoing":
            return None  # an invoice of this wallet's own: the wallet refuses paying it
        if result.get("settled_at") and is_hex32(result.get("preimage")):
            return _payment_from(
                {"preimage": result["preimage"], "fees_paid": result.get("fees_paid", 0)}, payment_hash
            )
        if _unpaid_state(result) is InvoiceState.PENDING:
            raise WalletUnavailable("NWC: a payment of this invoice is in flight; ask again later", "payment_pending")
        return None

    async def balance_msat(self) -> int:
        result = await self._client.request("get_balance", {})
        balance = result.get("balance")
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise WalletUnavailable("NWC get_balance: the result has no balance", "bad_response")
        return max(0, balance)


def _msat(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _unpaid_state(result: dict[str, Any]) -> InvoiceState:
    state = result.get("state")
    if state in ("expired", "failed"):
        return InvoiceState(state)
    expires_at = result.get("expires_at")
    if isinstance(expires_at, int) and expires_at <= time.time():
        return InvoiceState.EXPIRED
    return InvoiceState.PENDING


def _payment_from(result: dict[str, Any], payment_hash: str) -> Payment:
    preimage = result.get("preimage")
    try:
        return Payment(payment_hash, str(preimage), _msat(result.get("fees_paid")))
    except ValueError:
        raise WalletUnavailable("NWC pay_invoice: the preimage does not match the invoice", "bad_response") from None
