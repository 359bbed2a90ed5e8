"""Deleting rows past their retention, in small batches.

Each batch is one short `DELETE` of at most `limit` rows picked with `FOR UPDATE SKIP LOCKED`, so a large backlog
never holds locks for long, and several router replicas pruning at once split the rows between them instead of
waiting on each other. The row lock also re-checks the condition: a node that heartbeats while it is being
pruned keeps its row. Metering records and nonces are not pruned here (nonces have their own pruning in
`fedai.store.nonces`; metering records are accounting). Payment requests go with their payees (the foreign key
cascades, migrations/0016, as do their OpenAI edge refund links, 0020) only once no payee can be claimed or is
waiting on a refund (docs/payments.md#retention).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from fedai.store.pruning import delete_in_batches


@dataclass(frozen=True, slots=True)
class Rule:
    """Which rows of `table` are past retention: `condition` on the row, with `$1` = retention in seconds."""

    table: str
    key: str  # the primary key column
    condition: str


_UNKNOWN_NODE = "NOT EXISTS (SELECT 1 FROM nodes n WHERE n.pubkey = {table}.pubkey)"
_BEFORE = "now() - make_interval(secs => $1)"
# a payee still held by a request in flight, or whose refund is not settled yet, keeps its whole request
_PAYMENT_OPEN = (
    "EXISTS (SELECT 1 FROM payment_payees p WHERE p.request_id = payment_requests.id AND (p.state = 'paid' OR EXISTS"
    " (SELECT 1 FROM refunds f WHERE f.payment_hash = p.payment_hash AND f.state IN ('pending', 'paying'))))"
)
# a statement's payee is still recorded (it goes when its request does)
_PAYEE_KEPT = "EXISTS (SELECT 1 FROM payment_payees p WHERE p.payment_hash = payment_settlements.payment_hash)"

RULES: dict[str, Rule] = {
    # no heartbeat and no announcement within the retention (updated_at is set by both)
    "nodes": Rule("nodes", "pubkey", f"updated_at < {_BEFORE}"),
    # expired more than the retention ago (used or not)
    "quotes": Rule("quotes", "id", f"expires_at < {_BEFORE}"),
    # the award won for a quote (its salt with it): past its deadline by the quotes' retention
    "offload_quotes": Rule("offload_quotes", "quote_id", f"deadline < {_BEFORE}"),
    "chains": Rule("chains", "id", f"created_at < {_BEFORE}"),
    "dispatch_attempts": Rule("dispatch_attempts", "id", f"created_at < {_BEFORE}"),
    # a manifest or health record outlives its node by the retention (a manifest may come before the node)
    "node_manifests": Rule(
        "node_manifests", "pubkey", f"updated_at < {_BEFORE} AND " + _UNKNOWN_NODE.format(table="node_manifests")
    ),
    "node_health": Rule(
        "node_health", "pubkey", f"updated_at < {_BEFORE} AND " + _UNKNOWN_NODE.format(table="node_health")
    ),
    # expired more than the retention ago (no invoice of it can be presented any more), with its payees
    "payment_requests": Rule("payment_requests", "id", f"expires_at < {_BEFORE} AND NOT {_PAYMENT_OPEN}"),
    # a payee's statement of a paid answer, once that payee was pruned with its request (a provider's own
    # statements, which have no payee row here, by their age alone)
    "payment_settlements": Rule(
        "payment_settlements",
        "payment_hash",
        f"created_at < {_BEFORE} AND NOT {_PAYEE_KEPT}",
    ),
    # the router's own refunds (a node sharing the database prunes its own), paid or given up
    "refunds": Rule("refunds", "id", f"role <> 'node' AND state IN ('paid', 'failed') AND updated_at < {_BEFORE}"),
}


def delete_statement(rule: Rule) -> str:
    """One batch: `$1` retention in seconds, `$2` the most rows to delete."""
    # table, key and condition come from RULES above, never from input
    pick = f"SELECT {rule.key} FROM {rule.table} WHERE {rule.condition} LIMIT $2 FOR UPDATE SKIP LOCKED"  # noqa: S608
    return f"DELETE FROM {rule.table} WHERE {rule.key} IN ({pick})"  # noqa: S608


async def prune(pool: asyncpg.Pool, rule: Rule, retention_s: float, *, batch: int, max_batches: int) -> int:
    """Delete rows past `retention_s`, `batch` at a time, for at most `max_batches` batches; returns how many.
    A batch smaller than `batch` means the backlog is done (or the rest is locked by another replica)."""
    return await delete_in_batches(pool, delete_statement(rule), retention_s, batch=batch, max_batches=max_batches)
