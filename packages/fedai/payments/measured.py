"""A wallet that reports every call (method, outcome, seconds) to an observer, for metrics on wallet errors and
latency; the observer (a service's Prometheus histogram, a test's list) never sees arguments or results."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fedai.payments.errors import WalletError
from fedai.payments.wallet import Invoice, InvoiceStatus, Payment, Wallet

T = TypeVar("T")
Observer = Callable[[str, str, float], None]  # method, outcome ("ok" or the error's reason), seconds


class MeasuredWallet:
    """Wraps a Wallet; outcomes are "ok", a WalletError's reason, or "invalid_argument" for a ValueError."""

    def __init__(self, wallet: Wallet, observe: Observer) -> None:
        self._wallet = wallet
        self._observe = observe

    def __repr__(self) -> str:
        return f"MeasuredWallet({self._wallet!r})"

    async def _measure(self, method: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except WalletError as exc:
            outcome = exc.reason
            raise
        except ValueError:
            outcome = "invalid_argument"
            raise
        finally:
            self._observe(method, outcome, time.perf_counter() - started)

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> Invoice:
        call = self._wallet.create_invoice(amount_msat, memo, expiry_s, idempotency_key)
        return await self._measure("create_invoice", call)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        return await self._measure("lookup_invoice", self._wallet.lookup_invoice(payment_hash))

    async def pay_invoice(self, bolt11: str, max_fee_msat: int, idempotency_key: str) -> Payment:
        return await self._measure("pay_invoice", self._wallet.pay_invoice(bolt11, max_fee_msat, idempotency_key))

    async def balance_msat(self) -> int:
        return await self._measure("balance_msat", self._wallet.balance_msat())

    async def aclose(self) -> None:
        await self._wallet.aclose()
