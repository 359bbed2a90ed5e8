"""The router's view of nodes: a cache of the `nodes` table plus this process's live counters.

Truth lives in Postgres (heartbeats and announcements are written there first); every replica refreshes
its cache incrementally. Live load (`in_flight`) is what this router has outstanding right now, so the
scheduler never waits for the next heartbeat to learn that a node is busy (DESIGN.md section 10).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from fedai.protocol.messages import ModelInfo, NodeDescriptor
from fedai.store import nodes as node_store

COOLDOWN_BASE_S = 0.5
COOLDOWN_MAX_S = 30.0
QUARANTINE_S = 60.0


@dataclass(slots=True)
class NodeState:
    pubkey: str
    descriptor: NodeDescriptor
    verified: bool
    heartbeat: bool  # registered by a signed heartbeat (not only announced on a relay)
    last_seen: float  # unix seconds of the last heartbeat, or of the announcement
    reported_in_flight: int = 0  # what the node said in its last heartbeat
    local_at_report: int = 0  # what this router had in flight to it at that moment
    in_flight: int = 0  # this router's requests outstanding to the node now
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    models: dict[str, ModelInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = {m.id: m for m in self.descriptor.models}

    @property
    def endpoint(self) -> str:
        return self.descriptor.endpoint.rstrip("/")

    @property
    def load(self) -> int:
        """Requests outstanding at the node: ours now, plus others' as last reported."""
        return self.in_flight + max(0, self.reported_in_flight - self.local_at_report)

    @property
    def capacity(self) -> int:
        return self.descriptor.capacity.max_concurrent


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class Registry:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.nodes: dict[str, NodeState] = {}
        self._watermark: datetime | None = None

    async def refresh(self) -> int:
        """Pull rows changed since the last refresh; returns how many changed."""
        rows = await node_store.load_nodes(self._pool, since=self._watermark)
        for row in rows:
            self._apply(row)
            if self._watermark is None or row.updated_at > self._watermark:
                self._watermark = row.updated_at
        return len(rows)

    def _apply(self, row: node_store.NodeRow) -> None:
        heartbeat = row.last_heartbeat is not None
        last_seen = _ts(row.last_heartbeat) if heartbeat else _ts(row.last_announce)
        self._upsert(row.pubkey, row.descriptor, row.verified, heartbeat, last_seen)

    def _upsert(self, pubkey: str, descriptor: NodeDescriptor, verified: bool, heartbeat: bool, seen: float) -> None:
        current = self.nodes.get(pubkey)
        if current is None:
            self.nodes[pubkey] = NodeState(
                pubkey=pubkey,
                descriptor=descriptor,
                verified=verified,
                heartbeat=heartbeat,
                last_seen=seen,
                reported_in_flight=descriptor.capacity.in_flight,
            )
            return
        if seen > current.last_seen or descriptor != current.descriptor:
            current.reported_in_flight = descriptor.capacity.in_flight
            current.local_at_report = current.in_flight
        current.descriptor = descriptor
        current.models = {m.id: m for m in descriptor.models}
        current.verified = verified or current.verified
        current.heartbeat = heartbeat
        current.last_seen = max(seen, current.last_seen)

    async def record_heartbeat(self, pubkey: str, descriptor: NodeDescriptor) -> None:
        """Persist a verified heartbeat, then update the cache at once."""
        await node_store.upsert_heartbeat(self._pool, pubkey, descriptor)
        self._upsert(pubkey, descriptor, True, True, time.time())

    async def record_announce(self, pubkey: str, descriptor: NodeDescriptor) -> bool:
        stored = await node_store.upsert_announce(self._pool, pubkey, descriptor)
        if stored:
            self._upsert(pubkey, descriptor, False, False, time.time())
        return stored

    def begin(self, node: NodeState) -> None:
        node.in_flight += 1

    def end(self, node: NodeState) -> None:
        node.in_flight -= 1

    async def succeeded(self, node: NodeState) -> None:
        node.consecutive_failures = 0
        node.cooldown_until = 0.0
        if not node.verified:
            node.verified = True
            await node_store.mark_verified(self._pool, node.pubkey)

    def failed(self, node: NodeState, *, retry_after_s: float | None = None, quarantine: bool = False) -> None:
        """Put the node in cooldown: exponential in consecutive failures, longer if it broke the protocol."""
        node.consecutive_failures += 1
        backoff = min(COOLDOWN_MAX_S, COOLDOWN_BASE_S * 2 ** (node.consecutive_failures - 1))
        if retry_after_s is not None:
            backoff = max(backoff, min(retry_after_s, COOLDOWN_MAX_S))
        if quarantine:
            backoff = QUARANTINE_S
        node.cooldown_until = time.time() + backoff
