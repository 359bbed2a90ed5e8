"""The node's pruning of its payment rows (docs/payments.md#retention): its claims (`payment_claims`) and its own
refunds (role `node` of `refunds`), in the `NODE_DB_URL` database, past `NODE_PAYMENT_RETENTION_S`.

A claim goes only once its payment request expired more than the retention ago (the node refuses a forwarded
request whose payment request expired, so the hash can never be claimed again: presented again it is refused as
`payment_expired`), never while it is held by a request in flight or its refund is still open. Every node process
on one database runs it; the batched, skip-locked deletes split the rows between them.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from fedai.store.pruning import delete_in_batches

log = logging.getLogger("fedai.node.retention")

INTERVAL_S = 300.0  # how often the job runs
BATCH = 1_000  # rows per DELETE (each its own short transaction)
MAX_BATCHES = 100  # per table and run; the rest waits for the next run

# $1: retention in seconds, $2: the most rows of one batch
STATEMENTS: dict[str, str] = {
    "payment_claims": """
DELETE FROM payment_claims WHERE payment_hash IN (
    SELECT c.payment_hash FROM payment_claims c
    WHERE c.expires_at < now() - make_interval(secs => $1) AND c.state <> 'claimed' AND NOT EXISTS (
        SELECT 1 FROM refunds f WHERE f.payment_hash = c.payment_hash AND f.state IN ('pending', 'paying')
    )
    LIMIT $2 FOR UPDATE OF c SKIP LOCKED
)""",
    "refunds": """
DELETE FROM refunds WHERE id IN (
    SELECT id FROM refunds
    WHERE role = 'node' AND state IN ('paid', 'failed') AND updated_at < now() - make_interval(secs => $1)
    LIMIT $2 FOR UPDATE SKIP LOCKED
)""",
}


class PaymentPruner:
    """Deletes the node's payment rows past `retention_s` (0: never) on `pool`."""

    def __init__(self, pool: asyncpg.Pool, retention_s: int, *, batch: int = BATCH, max_batches: int = MAX_BATCHES):
        self._pool = pool
        self.retention_s = retention_s
        self._batch = batch
        self._max_batches = max_batches

    async def run(self) -> dict[str, int]:
        """One pass over both tables; returns how many rows each lost."""
        if self.retention_s <= 0:
            return {}
        counts = {
            table: await delete_in_batches(
                self._pool, statement, self.retention_s, batch=self._batch, max_batches=self._max_batches
            )
            for table, statement in STATEMENTS.items()
        }
        if any(counts.values()):
            log.info("pruned", extra={"rows": {k: v for k, v in counts.items() if v}})
        return counts

    async def loop(self, interval_s: float = INTERVAL_S) -> None:
        """Run every `interval_s` until cancelled; a pass the database fails is retried at the next one."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("payment pruning failed", extra={"error": type(exc).__name__})
