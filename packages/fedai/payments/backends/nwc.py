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

import logging
import time
from typing import Any

from fedai.payments.backends.guard import Idempotency, check_create, check_fee, check_key
from fedai.payments.backends.nwc_client import DEFAULT_TIMEOUT_S, NwcClient
from fedai.payments.backends.nwc_uri import NwcUri, parse_nwc_uri
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.invoice import check_invoice, decode_invoice
from fedai.payments.spec import WalletSpec
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32

log = logging.getLogger("fedai.payments.nwc")

DEFAULT_NETWORK = "bitcoin"
MADE_LIMIT = 10_000  # invoices remembered by key in this process


class NwcBackend:
    """A `fedai.payments.wallet.Wallet` on a wallet service reached by a NIP-47 connection."""

    def __init__(self, uri: NwcUri, *, network: str = DEFAULT_NETWORK, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.network = network
        self._client = NwcClient(uri, timeout=timeout)
        self._name = f"nwc wallet {uri.wallet_pubkey[:12]}…"
        self._invoices = Idempotency(self._name)  # creates: key -> amount, one at a time per key
        self._once = Idempotency(self._name)  # payments: key -> payment hash, one at a time per hash
        self._made: dict[str, Invoice] = {}

    def __repr__(self) -> str:
        return f"NwcBackend({self._name!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        check_create(amount_msat, memo, expiry_s, idempotency_key)
        self._invoices.bind(idempotency_key, str(amount_msat))
        async with self._invoices.serialized(idempotency_key):
            known = self._made.get(idempotency_key)
            if known is None:
                params = {"amount": amount_msat, "description": memo, "expiry": expiry_s}
                known = self._invoice_from(await self._client.request("make_invoice", params), amount_msat)
                if len(self._made) >= MADE_LIMIT:
                    self._made.pop(next(iter(self._made)))
                self._made[idempotency_key] = known
        return known

    def _invoice_from(self, result: dict[str, Any], amount_msat: int) -> Invoice:
        bolt11 = result.get("invoice")
        payment_hash = result.get("payment_hash")
        if not isinstance(bolt11, str):
            raise WalletUnavailable(f"{self._name}: make_invoice answered no invoice", "bad_reply")
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
            raise ValueError("payment_hash must be 64 lowercase hex characters")
        result = await self._lookup(payment_hash)
        if result.get("type") == "outgoing":
            raise WalletRefused(f"{self._name}: this wallet did not create that invoice", "unknown_invoice")
        preimage = result.get("preimage")
        if result.get("settled_at") and is_hex32(preimage):
            return InvoiceStatus(payment_hash, InvoiceState.PAID, _msat(result.get("amount")), str(preimage))
        return InvoiceStatus(payment_hash, _unpaid_state(result))

    async def _lookup(self, payment_hash: str) -> dict[str, Any]:
        result = await self._client.request("lookup_invoice", {"payment_hash": payment_hash})
        if result.get("payment_hash") != payment_hash:
            raise WalletUnavailable(f"{self._name}: lookup_invoice answered another payment hash", "bad_reply")
        return result

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        check_fee(max_fee_msat)
        check_key(idempotency_key)
        decoded = decode_invoice(bolt11, network=self.network)
        payment_hash = decoded.payment_hash
        self._once.bind(idempotency_key, payment_hash)
        async with self._once.serialized(payment_hash):
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
            raise WalletUnavailable(f"{self._name}: a payment of this invoice is in flight", "in_flight")
        return None

    async def balance_msat(self) -> int:
        result = await self._client.request("get_balance", {})
        balance = result.get("balance")
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise WalletUnavailable(f"{self._name}: get_balance answered no balance", "bad_reply")
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
        raise WalletUnavailable("nwc: pay_invoice answered a preimage that does not match", "bad_reply") from None


def open_nwc(spec: WalletSpec) -> NwcBackend:
    """An NwcBackend from the connection URI (factory for fedai.payments.config; `network=`, `timeout=` optional)."""
    network = spec.param("network", DEFAULT_NETWORK) or DEFAULT_NETWORK
    timeout = spec.seconds("timeout", DEFAULT_TIMEOUT_S)
    try:
        return NwcBackend(parse_nwc_uri(spec.uri.reveal()), network=network, timeout=timeout)
    except ValueError as exc:  # the URI's parts, or a secret key out of secp256k1's range
        raise spec.error(str(exc)) from None
