"""The in-memory node index: every known node's state plus one scheduler table per model name, kept in
step. No I/O: the registry persists around it, and the simulator drives it directly."""

from __future__ import annotations

import time

from fedai.protocol.messages import NodeDescriptor
from fedai_router.health import record_failure, record_success
from fedai_router.node_state import NodeState, models_by_name
from fedai_router.scheduler import ModelTable
from fedai_router.trust import effective_trust


class NodeIndex:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.tables: dict[str, ModelTable] = {}

    def upsert(
        self, pubkey: str, descriptor: NodeDescriptor, *, verified: bool, heartbeat: bool, seen: float
    ) -> NodeState:
        """Add a node or apply a new descriptor/heartbeat to it; its rows follow its model names."""
        node = self.nodes.get(pubkey)
        if node is None:
            node = NodeState(pubkey=pubkey, descriptor=descriptor, verified=verified, heartbeat=heartbeat,
                             last_seen=seen, reported_in_flight=descriptor.capacity.in_flight)  # fmt: skip
            self.nodes[pubkey] = node
        else:
            if seen > node.last_seen or descriptor != node.descriptor:
                node.reported_in_flight = descriptor.capacity.in_flight
                node.local_at_report = node.in_flight
            old_names = set(node.models)
            node.descriptor = descriptor
            node.models = models_by_name(descriptor)
            node.verified = verified or node.verified
            node.heartbeat = heartbeat
            node.last_seen = max(seen, node.last_seen)
            for name in old_names - set(node.models):
                self.tables[name].remove(pubkey)
        node.trust = effective_trust(node.manifest_trust, node.health)
        for name, info in node.models.items():
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = ModelTable(name)
            table.upsert(node, info)
        return node

    def remove(self, pubkey: str) -> None:
        node = self.nodes.pop(pubkey, None)
        if node is not None:
            for name in node.models:
                self.tables[name].remove(pubkey)

    def sync(self, node: NodeState) -> None:
        """Copy a node's changing state into its scheduler rows (after any change of load, health or trust)."""
        node.trust = effective_trust(node.manifest_trust, node.health)
        for name in node.models:
            table = self.tables[name]
            table.sync(table.row_of[node.pubkey], node)

    def begin(self, node: NodeState) -> None:
        node.in_flight += 1
        self.sync(node)

    def end(self, node: NodeState) -> None:
        node.in_flight -= 1
        self.sync(node)

    def succeeded(self, node: NodeState, latency_ms: float) -> None:
        record_success(node.health, latency_ms)
        self.sync(node)

    def failed(
        self, node: NodeState, code: str, *, now: float | None = None, retry_after_s: float | None = None,
        quarantine: bool = False,
    ) -> None:  # fmt: skip
        record_failure(node.health, time.time() if now is None else now, code, retry_after_s=retry_after_s,
                       quarantine=quarantine)  # fmt: skip
        self.sync(node)

    def set_manifest_trust(self, node: NodeState, trust: float) -> None:
        node.manifest_trust = trust
        self.sync(node)
