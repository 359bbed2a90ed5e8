"""The scheduler's vocabulary: what a request needs, how nodes are weighed, and what a ranking returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedai.protocol.messages import ModelInfo
from fedai_router.node_state import NodeState

# Why a node was filtered out, in the order the filters run (explain() and errors use these names).
REASONS = ("model", "pinned_out", "excluded", "held", "job_type", "context", "stale", "cooldown", "busy", "price")


@dataclass(frozen=True, slots=True)
class Weights:
    """Score weights; every part is a cost, so lower totals rank first. Configured by ROUTER_W_* variables."""

    price: float = 1.0  # × price / cheapest eligible price (1.0 for the cheapest)
    load: float = 1.0  # × load / capacity, live (this router's in-flight + others' reported)
    latency_per_s: float = 1.0  # × latency in seconds: observed EWMA once measured, else the node's estimate
    reliability: float = 2.0  # × (1 − smoothed success rate over the rolling window)
    trust: float = 0.2  # × (1 − trust), trust from the node's manifest, then from observation
    unverified: float = 0.5  # + this for nodes only announced on a relay, not yet proven


@dataclass(frozen=True, slots=True)
class Policy:
    heartbeat_ttl_s: float = 30.0
    announce_ttl_s: float = 900.0
    weights: Weights = field(default_factory=Weights)
    random_top_n: int = 1  # > 1: pick the first node at random among the best N (weighted), to avoid herding
    min_latency_samples: int = 3  # observed latency replaces the estimate after this many successes

    def fresh(self, last_seen: float, heartbeat: bool, now: float) -> bool:
        """A node last seen at `last_seen` still counts (heartbeat TTL, or the longer one of an announcement)."""
        return now - last_seen <= (self.heartbeat_ttl_s if heartbeat else self.announce_ttl_s)


@dataclass(frozen=True, slots=True)
class Demand:
    model: str
    input_tokens: int
    max_tokens: int
    job_type: str | None = None
    max_price_msat: int | None = None
    pin: frozenset[str] = frozenset()  # only these nodes (empty: any)
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ScoreParts:
    price: float
    load: float
    latency: float
    reliability: float
    trust: float
    unverified: float

    @property
    def total(self) -> float:
        return self.price + self.load + self.latency + self.reliability + self.trust + self.unverified


@dataclass(frozen=True, slots=True)
class Candidate:
    node: NodeState
    model: ModelInfo
    max_price_msat: int  # the price if the node produced all max_tokens
    score: float
