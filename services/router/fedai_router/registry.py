"""The router's registry: the in-memory `NodeIndex`, loaded from and written through to Postgres.

Truth lives in Postgres (heartbeats, announcements and failures are written there first; successes are
summed per minute and exchanged every few seconds); every replica refreshes incrementally. Live load
(`in_flight`) is what this router has outstanding right now, so the scheduler never waits for the next
heartbeat to learn that a node is busy (docs/decisions.md#live-load).

The index is bounded (`RegistryLimits`): rows beyond its budget are not loaded, registrations that would pass it
are refused, and nodes not seen for `ROUTER_NODE_RETENTION_S` are forgotten (docs/security.md#registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import CollectorRegistry

from fedai.protocol.messages import NodeDescriptor
from fedai_router.admission import RegistrationGate, budget
from fedai_router.config import RegistryLimits, Retention
from fedai_router.index import NodeIndex, RegistryFull, RegistryRefusal
from fedai_router.node_state import NodeState
from fedai_router.store import health as health_store
from fedai_router.store import manifests as manifest_store
from fedai_router.store import nodes as node_store

log = logging.getLogger("fedai.router.registry")

WINDOW_MINUTES = 15
# Incremental loads read this far behind their watermark: a row stamped now() by a transaction that commits
# after a later-stamped row has been read would otherwise be skipped for good. Re-applying a row is harmless.
READ_OVERLAP = timedelta(seconds=5)


def _since(mark: datetime | None) -> datetime | None:
    return mark - READ_OVERLAP if mark is not None else None


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _zero() -> list[float]:
    return [0.0, 0.0, 0.0]


class Registry:
    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: RegistryLimits | None = None,
        retention: Retention | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits or RegistryLimits()
        self.retention = retention or Retention()
        self.index = NodeIndex(budget(self.limits))
        self.nodes = self.index.nodes
        self.tables = self.index.tables
        self.gate = RegistrationGate(self.limits, metrics)
        self._registering = asyncio.Lock()
        self._node_mark: datetime | None = None
        self._health_mark: datetime | None = None
        self._manifest_mark: datetime | None = None
        self.banned: frozenset[str] = frozenset()  # banned by an operator: heartbeats and announcements refused
        self.manifest_trust: dict[str, float] = {}  # pubkey -> trust from its stored manifest (node known or not)
        self._manifest_seen: dict[str, float] = {}  # pubkey -> when its manifest was stored (unix s)
        # this replica's outcomes not yet added to node_stats: pubkey -> [successes, failures, latency_ms_sum]
        self._deltas: defaultdict[str, list[float]] = defaultdict(_zero)

    async def refresh(self) -> int:
        """Pull node and health rows changed since the last refresh; returns how many nodes changed."""
        rows = await node_store.load_nodes(
            self.pool, since=_since(self._node_mark), seen_within_s=self.retention.nodes_s
        )
        for row in rows:
            self._node_mark = max(self._node_mark or row.updated_at, row.updated_at)
            heartbeat = row.last_heartbeat is not None
            seen = _ts(row.last_heartbeat) if heartbeat else _ts(row.last_announce)
            try:
                state = self.index.upsert(
                    row.pubkey, row.descriptor, verified=row.verified, heartbeat=heartbeat, seen=seen
                )
            except RegistryFull as err:  # stored by a replica with room (or before a restart): not held here
                self.refused("refresh", err)
                continue
            self._apply_manifest(state)
        for h in await health_store.load_health(self.pool, since=_since(self._health_mark)):
            node = self.nodes.get(h.pubkey)
            if node is not None:
                health = node.health
                health.consecutive_failures = max(health.consecutive_failures, h.consecutive_failures)
                health.cooldown_until = max(health.cooldown_until, h.cooldown_until)
                health.quarantined_until = max(health.quarantined_until, h.quarantined_until)
                self.index.sync(node)
            self._health_mark = max(self._health_mark or h.updated_at, h.updated_at)
        for m in await manifest_store.load_trust(self.pool, since=_since(self._manifest_mark)):
            self.apply_manifest(m.pubkey, m.trust, stored_at=m.updated_at.timestamp())
            self._manifest_mark = max(self._manifest_mark or m.updated_at, m.updated_at)
        return len(rows)

    def refused(self, source: str, err: RegistryRefusal) -> None:
        """Count a registration refused by a registry bound (`source`: heartbeat, announce or refresh)."""
        self.gate.refused.labels(source, err.reason).inc()
        log.debug("registration refused", extra={"source": source, "code": err.code.value, "reason": err.reason})

    def prune(self, now: float) -> int:
        """Forget nodes not seen within `ROUTER_NODE_RETENTION_S`, and manifests of unknown nodes older than
        `ROUTER_MANIFEST_RETENTION_S` (Postgres is pruned by the housekeeping job); returns the nodes forgotten."""
        removed = self.index.prune(now - self.retention.nodes_s)
        for pubkey in removed:
            self._deltas.pop(pubkey, None)
        if self.retention.manifests_s:
            cutoff = now - self.retention.manifests_s
            old = [k for k, at in self._manifest_seen.items() if at < cutoff and k not in self.nodes]
            for pubkey in old:
                del self._manifest_seen[pubkey]
                self.manifest_trust.pop(pubkey, None)
        return len(removed)

    def admit(
        self,
        pubkey: str,
        descriptor: NodeDescriptor,
        *,
        verified: bool,
        address: str | None = None,
        relay: str | None = None,
    ) -> None:
        """For a registration (a new key, or new names): room in the index, then the registration rates of the key
        and of its source (`address` for a heartbeat, `relay` for an announcement). Raises `RegistryRefusal`."""
        if self.index.changes_names(pubkey, descriptor):
            self.index.check_room(pubkey, descriptor, verified=verified)
            self.gate.check(pubkey, address=address, relay=relay)

    @asynccontextmanager
    async def registering(self, pubkey: str, descriptor: NodeDescriptor, *, verified: bool) -> AsyncIterator[None]:
        """Around claiming and storing a registration (a new key, or new names): one at a time, with the budget
        checked again under the lock, so concurrent registrations cannot overshoot it. A heartbeat of a known
        node with the same names passes straight through."""
        if not self.index.changes_names(pubkey, descriptor):
            yield
            return
        async with self._registering:
            self.index.check_room(pubkey, descriptor, verified=verified)
            yield

    def apply_manifest(self, pubkey: str, trust: float, *, stored_at: float | None = None) -> bool:
        """Remember a node's manifest trust and apply it if the node is known; True if it is."""
        self.manifest_trust[pubkey] = trust
        self._manifest_seen[pubkey] = time.time() if stored_at is None else stored_at
        node = self.nodes.get(pubkey)
        if node is not None:
            self._apply_manifest(node)
        return node is not None

    def _apply_manifest(self, node: NodeState) -> None:
        trust = self.manifest_trust.get(node.pubkey)
        if trust is not None and trust != node.manifest_trust:
            self.index.set_manifest_trust(node, trust)

    async def exchange_stats(self) -> None:
        """Add this replica's outcomes to the shared window, then reload the window all replicas wrote."""
        deltas, self._deltas = self._deltas, defaultdict(_zero)
        try:
            await health_store.add_stats(self.pool, [(k, int(s), int(f), lat) for k, (s, f, lat) in deltas.items()])
        except BaseException:
            for key, values in deltas.items():  # keep them for the next exchange
                self._deltas[key] = [a + b for a, b in zip(self._deltas[key], values, strict=True)]
            raise
        window = {w.pubkey: w for w in await health_store.load_window(self.pool, WINDOW_MINUTES)}
        for node in self.nodes.values():
            w = window.get(node.pubkey)
            pending = self._deltas.get(node.pubkey) or _zero()
            node.health.successes = (w.successes if w else 0) + int(pending[0])
            node.health.failures = (w.failures if w else 0) + int(pending[1])
            if w is not None and w.latency_ms is not None:
                node.health.latency_ms = w.latency_ms
                node.health.latency_samples = max(node.health.latency_samples, w.successes)
            self.index.sync(node)

    async def record_heartbeat(self, pubkey: str, descriptor: NodeDescriptor) -> None:
        """Persist a verified heartbeat, then update the cache at once."""
        await node_store.upsert_heartbeat(self.pool, pubkey, descriptor)
        self._apply_manifest(self.index.upsert(pubkey, descriptor, verified=True, heartbeat=True, seen=time.time()))

    async def record_announce(self, pubkey: str, descriptor: NodeDescriptor) -> bool:
        if pubkey in self.banned:
            return False
        stored = await node_store.upsert_announce(self.pool, pubkey, descriptor)
        if stored:
            self.index.upsert(pubkey, descriptor, verified=False, heartbeat=False, seen=time.time())
        return stored

    def begin(self, node: NodeState) -> None:
        self.index.begin(node)

    def end(self, node: NodeState) -> None:
        self.index.end(node)

    async def succeeded(self, node: NodeState, latency_ms: float) -> None:
        recovering = node.health.consecutive_failures > 0 or node.health.cooldown_until > time.time()
        self.index.succeeded(node, latency_ms)
        delta = self._deltas[node.pubkey]
        delta[0] += 1
        delta[2] += latency_ms
        if recovering:
            await health_store.save_recovery(self.pool, node.pubkey)
        if not node.verified:
            node.verified = True
            self.index.sync(node)
            await node_store.mark_verified(self.pool, node.pubkey)

    async def failed(
        self, node: NodeState, code: str, *, retry_after_s: float | None = None, quarantine: bool = False
    ) -> None:
        """Cool the node down (exponential in consecutive failures; a quarantine if it broke the protocol) and
        tell the other replicas through Postgres."""
        self.index.failed(node, code, retry_after_s=retry_after_s, quarantine=quarantine)
        self._deltas[node.pubkey][1] += 1
        h = node.health
        await health_store.save_failure(
            self.pool, node.pubkey, h.consecutive_failures, h.cooldown_until, h.quarantined_until, code
        )
