"""The router's payment reconciliation (docs/payments.md#reconciliation, runbooks/payments.md): one background
job, run by every replica (each statement is one conditional UPDATE, so replicas never conflict), that

- expires payment requests and payees never paid by their expiry (`expire_unpaid`);
- releases claims held by a replica that died mid-request (`paid` for longer than `stale_s`), and refunds a dead
  worker held while paying (the refund's invoice stays: a retry pays that same one);
- retries due refunds of the router's fee and of its provider role (jobs peers paid it for), when the router
  has a wallet;
- counts anomalies, in `fedai_router_payment_anomalies{kind}` and one log line without secrets:
  `paid_never_consumed` (a payee proven paid and released, past its expiry: the client paid and was not served),
  `refund_failed` (refunds given up after their attempts), `refund_failing` (open refunds tried many times).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import asyncpg

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.refunder import Refunder
from fedai.store.refunds import RefundStore
from fedai_router.settlement_settings import SettlementSettings
from fedai_router.store.payments import PaymentStore

log = logging.getLogger("fedai.router.reconcile")

_PAID_NEVER_CONSUMED = """
SELECT count(*) FROM payment_payees WHERE state = 'released' AND expires_at <= $1
"""

_REQUESTS_BY_STATE = "SELECT state, count(*) AS n FROM payment_requests GROUP BY state"
_PAYEES_BY_STATE = "SELECT role, state, count(*) AS n FROM payment_payees GROUP BY role, state"


class Reconciler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: PaymentMetrics,
        settings: SettlementSettings,
        refunders: tuple[Refunder, ...] = (),
    ) -> None:
        self._pool = pool
        self._payments = PaymentStore(pool)
        self._refunds = RefundStore(pool)
        self._metrics = metrics
        self._settings = settings
        self._refunders = refunders  # one per role this router refunds: its fee, its provider role

    async def run(self) -> dict[str, int]:
        """One pass; returns what it changed and the anomalies it saw (also in metrics and the log)."""
        now = time.time()
        expired = await self._payments.expire_unpaid(now)
        done = {
            "expired_requests": expired.requests,
            "expired_payees": expired.payees,
            "released_claims": await self._payments.release_stale(now - self._settings.stale_s),
            "released_refunds": await self._refunds.release_stale(now - self._settings.stale_s),
        }
        for action, n in done.items():
            self._metrics.reconciled.labels(action).inc(n)
        for refunder in self._refunders:
            await refunder.retry_due(self._settings.refund_retry_s)
        await self._states()
        anomalies = await self._anomalies(now)
        if any(done.values()) or any(anomalies.values()):
            log.info("payments reconciled", extra={"changed": done, "anomalies": anomalies})
        return done | anomalies

    async def _states(self) -> None:
        """Payment requests by state and payees by role and state, as gauges (whole tables: their retention is
        not in place yet, see docs/payments.md#not-here-yet)."""
        for row in await self._pool.fetch(_REQUESTS_BY_STATE):
            self._metrics.requests.labels(row["state"]).set(row["n"])
        for row in await self._pool.fetch(_PAYEES_BY_STATE):
            self._metrics.payees.labels(row["role"], row["state"]).set(row["n"])

    async def _anomalies(self, now: float) -> dict[str, int]:
        failed, failing = await self._refunds.failing(self._settings.failing_attempts)
        found = {
            "paid_never_consumed": int(await self._pool.fetchval(_PAID_NEVER_CONSUMED, _at(now))),
            "refund_failed": failed,
            "refund_failing": failing,
        }
        for kind, n in found.items():
            self._metrics.anomalies.labels(kind).set(n)
        if found["refund_failed"] or found["refund_failing"] or found["paid_never_consumed"]:
            log.warning("payment anomalies", extra={"anomalies": found})
        return found


def _at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)
