"""The node's release of claims a dead process held (docs/payments.md#single-use-claims): a node process that died
mid-request (a crash, the OOM killer, `kill -9`) leaves its claim `claimed`, so the client's proof could never
serve a retry and retention would never prune the row. Every node process with `NODE_DB_URL` runs this job, at
start and then every `INTERVAL_S`: claims held longer than NODE_PAYMENT_STALE_S go back to `released` (claimable
again until their payment request expires), in one conditional UPDATE, so processes sharing a database never
release a claim twice. NODE_PAYMENT_STALE_S is at least NODE_RUNNER_TIMEOUT_MS plus a margin (`fedai_node.config`),
so a request still running is never released.

Counted in `fedai_node_payments_reconciled_total{action="released_claims"}`, logged as one line with the count.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from fedai.observability.payment_metrics import PaymentMetrics
from fedai_node.payment_claims import NodeClaims

log = logging.getLogger("fedai.node.stale_claims")

INTERVAL_S = 60.0  # how often the job runs (and once at start)
ACTION = "released_claims"  # the `action` label, as the router's reconciliation counts the same thing


class StaleClaims:
    """Releases the claims on `pool` held longer than `stale_s`."""

    def __init__(self, pool: asyncpg.Pool, stale_s: int, metrics: PaymentMetrics | None = None) -> None:
        self._claims = NodeClaims(pool)
        self.stale_s = stale_s
        self._metrics = metrics

    async def run(self) -> int:
        """One pass: how many claims it released."""
        released = await self._claims.release_stale(self.stale_s)
        if released:
            if self._metrics is not None:
                self._metrics.reconciled.labels(ACTION).inc(released)
            log.warning("stale payment claims released", extra={"released": released, "stale_s": self.stale_s})
        return released

    async def loop(self, interval_s: float = INTERVAL_S) -> None:
        """Run now and every `interval_s` until cancelled; a pass the database fails is retried at the next one."""
        while True:
            try:
                await self.run()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("stale claim release failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval_s)
