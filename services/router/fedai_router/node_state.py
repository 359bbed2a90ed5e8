"""What the router knows about one node: its signed descriptor, freshness, live load, health and trust."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedai.protocol.messages import ModelInfo, NodeDescriptor
from fedai_router.health import Health

DEFAULT_TRUST = 0.5


@dataclass(slots=True, eq=False)
class NodeState:
    pubkey: str
    descriptor: NodeDescriptor
    verified: bool
    heartbeat: bool  # registered by a signed heartbeat (not only announced on a relay)
    last_seen: float  # unix seconds of the last heartbeat, or of the announcement
    reported_in_flight: int = 0  # what the node said in its last heartbeat
    local_at_report: int = 0  # what this router had in flight to it at that moment
    in_flight: int = 0  # this router's requests outstanding to the node now
    health: Health = field(default_factory=Health)
    manifest_trust: float = DEFAULT_TRUST  # what the node's signed manifest earns it (fedai_router.trust)
    trust: float = DEFAULT_TRUST  # 0..1, the manifest's, giving way to observation as calls accumulate
    models: dict[str, ModelInfo] = field(default_factory=dict)  # by id and by alias
    held: bool = False  # drained or banned by an operator (runbooks/admin.md): never scheduled

    def __post_init__(self) -> None:
        self.models = models_by_name(self.descriptor)

    @property
    def endpoint(self) -> str:
        return self.descriptor.endpoint.rstrip("/")

    @property
    def load(self) -> int:
        """Requests outstanding at the node: ours now, plus others' as last reported."""
        return self.in_flight + max(0, self.reported_in_flight - self.local_at_report)

    @property
    def capacity(self) -> int:
        """Concurrent calls the scheduler may have at the node: its advertised maximum, or one while probing."""
        return 1 if self.health.probing else self.descriptor.capacity.max_concurrent

    @property
    def cooldown_until(self) -> float:
        return self.health.blocked_until()


def models_by_name(descriptor: NodeDescriptor) -> dict[str, ModelInfo]:
    """Every name a node answers to: model ids, then aliases (an id always wins over another model's alias)."""
    names: dict[str, ModelInfo] = {}
    for m in descriptor.models:
        for alias in m.aliases:
            names.setdefault(alias, m)
    for m in descriptor.models:
        names[m.id] = m
    return names
