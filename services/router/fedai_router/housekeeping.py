"""The router's scheduled pruning: one background job that forgets stale nodes in this replica's memory, then
deletes rows past their retention from Postgres (`fedai_router.store.retention`), counting what it removed.

Every replica runs it; the batched, skip-locked deletes make that safe (docs/architecture.md, "State and
replicas"; the variables are in runbooks/router-ops.md)."""

from __future__ import annotations

import logging
import time

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from fedai_router.config import Retention
from fedai_router.registry import Registry
from fedai_router.store import retention as store
from fedai_router.store.offload_quotes import cancel_unpaid

log = logging.getLogger("fedai.router.housekeeping")

MEMORY = "registry_memory"  # the metric label for nodes forgotten by this replica's index
UNPAID_AWARDS = "unpaid_offload_awards"  # awards of quotes that expired unpaid, cancelled (not deleted, not counted)


def retention_by_table(retention: Retention) -> dict[str, int]:
    """Seconds each table's rows are kept (0: kept for good, not pruned)."""
    return {
        "nodes": retention.nodes_s,
        "quotes": retention.quotes_s,
        "offload_quotes": retention.quotes_s,
        "chains": retention.chains_s,
        "dispatch_attempts": retention.attempts_s,
        "node_manifests": retention.manifests_s,
        "node_health": retention.manifests_s,
        "payment_requests": retention.payments_s,  # with their payees
        "payment_settlements": retention.payments_s,  # after their payees
        "refunds": retention.payments_s,
    }


class Housekeeper:
    def __init__(
        self, pool: asyncpg.Pool, registry: Registry, retention: Retention, metrics: CollectorRegistry | None = None
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.retention = retention
        self.pruned = Counter(
            "fedai_router_pruned_rows",
            "Rows deleted by the housekeeping job, by table (registry_memory: nodes this replica forgot)",
            ["table"],
            registry=metrics,
        )

    async def run(self) -> dict[str, int]:
        """One pass: memory first (it needs no database), then each table in turn; returns the counts."""
        counts = {MEMORY: self.registry.prune(time.time())}
        self.pruned.labels(MEMORY).inc(counts[MEMORY])
        counts[UNPAID_AWARDS] = await cancel_unpaid(self.pool)  # their reservations freed, the rows kept
        for table, seconds in retention_by_table(self.retention).items():
            if seconds <= 0:
                continue
            rule, r = store.RULES[table], self.retention
            counts[table] = await store.prune(self.pool, rule, seconds, batch=r.batch, max_batches=r.max_batches)
            self.pruned.labels(table).inc(counts[table])
        if any(counts.values()):
            log.info("pruned", extra={"rows": {k: v for k, v in counts.items() if v}})
        return counts
