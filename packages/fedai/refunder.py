"""Paying refunds (docs/payments.md#refunds): a payee returns the unused part of its share from its own wallet.

One refund per paid invoice (`fedai.store.refunds`). An attempt takes the refund (`begin`: of concurrent workers,
on any replica, one gets it), fixes the destination's invoice before paying, and pays it with the refund's own
idempotency key; every retry pays that same invoice with that same key, so nothing is paid twice. A failure
goes back to `pending` for the retry loop (`retry_due`), and to `failed` after `max_attempts`.
Logs and the error stored name a reason, never the destination, the invoice or a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedai.payments.destination import DestinationError, DestinationInvoices
from fedai.payments.errors import WalletError, WalletUnavailable
from fedai.payments.refund import parse_destination, refund_key
from fedai.payments.wallet import Wallet
from fedai.protocol.messages import Settlement
from fedai.store.refunds import Attempt, Refund, RefundStore

log = logging.getLogger("fedai.payments.refunds")

Outcome = str  # paid | retry | failed | busy (another worker holds it, or it is settled)
Observe = Callable[[str, Outcome], None]  # role, outcome: a service's counter


@dataclass(frozen=True, slots=True)
class RefundPolicy:
    max_fee_msat: int = 1_000  # routing fee allowed on one refund payment
    max_attempts: int = 8  # then `failed`, for an operator (runbooks/payments.md)
    allow_http: bool = False  # destinations over http (loopback tests only)


class Refunder:
    """Opens and pays the refunds of one payee (`role`) from `wallet`; `worker` names this process."""

    def __init__(
        self,
        store: RefundStore,
        wallet: Wallet,
        invoices: DestinationInvoices,
        *,
        role: str,
        worker: str,
        policy: RefundPolicy | None = None,
        observe: Observe | None = None,
    ) -> None:
        self.store = store
        self._wallet = wallet
        self._invoices = invoices
        self._role = role
        self._worker = worker
        self._policy = policy or RefundPolicy()
        self._observe = observe

    async def open(self, settlement: Settlement, refund_to: str) -> bool:
        """Record the refund a settlement owes; False when it refunds nothing or this invoice already has one.
        `refund_to` was checked with `parse_destination` by the caller."""
        if settlement.refund_msat <= 0:
            return False
        h, role = settlement.payment_hash, settlement.role
        return await self.store.open(Refund(h, role, settlement.refund_msat, refund_to, refund_key(h, role)))

    async def attempt(self, payment_hash: str) -> Outcome:
        """Try once to pay the refund of `payment_hash`; the outcome is also counted."""
        held = await self.store.begin(payment_hash, self._worker)
        if held is None:
            return self._count("busy")
        try:
            await self._pay(payment_hash, held)
        except (DestinationError, WalletError, ValueError) as exc:
            return self._count(await self._failed(payment_hash, held, exc))
        await self.store.settle(payment_hash, self._worker)
        log.info("refund paid", extra={"role": self._role, "amount_msat": held.amount_msat})
        return self._count("paid")

    async def _pay(self, payment_hash: str, held: Attempt) -> None:
        bolt11 = held.invoice
        if bolt11 is None:
            destination = parse_destination(held.destination, allow_http=self._policy.allow_http)
            memo = f"fedai refund {payment_hash[:16]}"
            bolt11 = await self._invoices.invoice(
                destination, held.amount_msat, memo, held.idempotency_key, time.time()
            )
            await self.store.set_invoice(payment_hash, self._worker, bolt11)
        await self._wallet.pay_invoice(bolt11, self._policy.max_fee_msat, held.idempotency_key)

    async def _failed(self, payment_hash: str, held: Attempt, exc: Exception) -> Outcome:
        reason = _reason(exc)
        final = held.attempts >= self._policy.max_attempts or isinstance(exc, ValueError)
        await self.store.fail(payment_hash, self._worker, reason, final=final)
        extra = {"role": self._role, "reason": reason, "attempts": held.attempts}
        log.warning("refund failed for good" if final else "refund failed, will retry", extra=extra)
        return "failed" if final else "retry"

    async def retry_due(self, backoff_s: float, limit: int = 100) -> dict[Outcome, int]:
        """One pass of the retry loop: every pending refund not touched for `backoff_s`."""
        counts: dict[Outcome, int] = {}
        for payment_hash in await self.store.due(self._role, time.time() - backoff_s, limit):
            outcome = await self.attempt(payment_hash)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _count(self, outcome: Outcome) -> Outcome:
        if self._observe is not None:
            self._observe(self._role, outcome)
        return outcome


def _reason(exc: Exception) -> str:
    """What is stored and logged: a kind and a reason word, never the destination or the invoice."""
    if isinstance(exc, DestinationError):
        return f"destination: {exc.reason}"
    if isinstance(exc, WalletUnavailable):
        return f"wallet unavailable: {exc.reason}"
    if isinstance(exc, WalletError):
        return f"wallet refused: {exc.reason}"
    return "destination: invalid"
