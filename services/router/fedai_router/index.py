"""The in-memory node index: every known node's state plus one scheduler table per model name, kept in
step. No I/O: the registry persists around it, and the simulator drives it directly.

With a `Budget`, the index never holds more than `max_nodes` nodes or `max_names` distinct model names (a table
is freed with its last row); unverified nodes may use only the share below the verified reserve
(docs/security.md#registry)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import NodeDescriptor
from fedai_router.health import record_failure, record_success
from fedai_router.node_state import NodeState, models_by_name
from fedai_router.scheduler import ModelTable
from fedai_router.trust import effective_trust

FULL_RETRY_AFTER_MS = 60_000  # what a refused node is told to wait: room appears as stale nodes are pruned


@dataclass(frozen=True, slots=True)
class Budget:
    """How much the index may hold; `verified_reserve` is the share of each bound only verified nodes may use."""

    max_nodes: int
    max_names: int
    verified_reserve: float = 0.0

    def node_cap(self, verified: bool) -> int:
        return self.max_nodes if verified else int(self.max_nodes * (1 - self.verified_reserve))

    def name_cap(self, verified: bool) -> int:
        return self.max_names if verified else int(self.max_names * (1 - self.verified_reserve))


class RegistryRefusal(FedaiError):
    """A heartbeat or announcement refused by a registry bound; `reason` names the bound (a metric label)."""

    def __init__(self, code: ErrorCode, reason: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(code, message, retry_after_ms=retry_after_ms)
        self.reason = reason


class RegistryFull(RegistryRefusal):
    """The index has no room for this node or for its new model names (`reason`: "nodes" or "model_names")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.CAPACITY_EXCEEDED, reason, message, retry_after_ms=FULL_RETRY_AFTER_MS)


class NodeIndex:
    def __init__(self, budget: Budget | None = None) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.tables: dict[str, ModelTable] = {}
        self.budget = budget
        self.held: frozenset[str] = frozenset()  # drained or banned by an operator (`hold`)

    def changes_names(self, pubkey: str, descriptor: NodeDescriptor) -> bool:
        """Whether taking `descriptor` adds the node or changes the names it answers to (a registration)."""
        node = self.nodes.get(pubkey)
        return node is None or node.models.keys() != models_by_name(descriptor).keys()

    def check_room(self, pubkey: str, descriptor: NodeDescriptor, *, verified: bool) -> None:
        """Raise `RegistryFull` if the budget has no room for this node or its new names (pure)."""
        budget = self.budget
        if budget is None:
            return
        node = self.nodes.get(pubkey)
        verified = verified or (node is not None and node.verified)
        who = "" if verified else " for unverified nodes"
        if node is None and len(self.nodes) >= budget.node_cap(verified):
            raise RegistryFull(
                "nodes",
                f"the registry is full{who}: {len(self.nodes)} nodes (ROUTER_MAX_NODES={budget.max_nodes}, "
                f"ROUTER_REGISTRY_VERIFIED_RESERVE={budget.verified_reserve:g})",
            )
        new = sum(1 for name in models_by_name(descriptor) if name not in self.tables)
        if new and len(self.tables) + new > budget.name_cap(verified):
            raise RegistryFull(
                "model_names",
                f"no room{who} for {new} new model names: {len(self.tables)} known "
                f"(ROUTER_MAX_MODEL_NAMES={budget.max_names}, "
                f"ROUTER_REGISTRY_VERIFIED_RESERVE={budget.verified_reserve:g})",
            )

    def upsert(
        self, pubkey: str, descriptor: NodeDescriptor, *, verified: bool, heartbeat: bool, seen: float
    ) -> NodeState:
        """Add a node or apply a new descriptor/heartbeat to it; its rows follow its model names.
        Raises `RegistryFull` (changing nothing) when the budget has no room."""
        if self.changes_names(pubkey, descriptor):
            self.check_room(pubkey, descriptor, verified=verified)
        node = self.nodes.get(pubkey)
        if node is None:
            node = NodeState(
                pubkey=pubkey,
                descriptor=descriptor,
                verified=verified,
                heartbeat=heartbeat,
                last_seen=seen,
                reported_in_flight=descriptor.capacity.in_flight,
                held=pubkey in self.held,
            )
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
                self._remove_row(name, pubkey)
        node.trust = effective_trust(node.manifest_trust, node.health)
        for name, info in node.models.items():
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = ModelTable(name)
            table.upsert(node, info)
        return node

    def remove(self, pubkey: str) -> None:
        """Forget a node; a table left without rows is freed (its name no longer exists for the scheduler)."""
        node = self.nodes.pop(pubkey, None)
        if node is not None:
            for name in node.models:
                self._remove_row(name, pubkey)

    def _remove_row(self, name: str, pubkey: str) -> None:
        table = self.tables[name]
        table.remove(pubkey)
        if not len(table):
            del self.tables[name]

    def prune(self, seen_before: float) -> list[str]:
        """Forget every node last seen before `seen_before` (unix s); returns their keys."""
        stale = [pubkey for pubkey, node in self.nodes.items() if node.last_seen < seen_before]
        for pubkey in stale:
            self.remove(pubkey)
        return stale

    def hold(self, held: frozenset[str]) -> None:
        """Operators' drained and banned nodes (runbooks/admin.md): held out of scheduling, now and on arrival."""
        changed = (self.held | held) - (self.held & held)
        self.held = held
        for pubkey in changed:
            node = self.nodes.get(pubkey)
            if node is not None:
                node.held = pubkey in held
                self.sync(node)

    def sync(self, node: NodeState) -> None:
        """Copy a node's changing state into its scheduler rows (after any change of load, health or trust).
        A node no longer indexed (pruned while a call to it was in flight) has no rows to update."""
        node.trust = effective_trust(node.manifest_trust, node.health)
        if self.nodes.get(node.pubkey) is not node:
            return
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
        self,
        node: NodeState,
        code: str,
        *,
        now: float | None = None,
        retry_after_s: float | None = None,
        quarantine: bool = False,
    ) -> None:
        record_failure(
            node.health, time.time() if now is None else now, code, retry_after_s=retry_after_s, quarantine=quarantine
        )
        self.sync(node)

    def set_manifest_trust(self, node: NodeState, trust: float) -> None:
        node.manifest_trust = trust
        self.sync(node)
