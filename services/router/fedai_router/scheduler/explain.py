"""Why each node would or would not get a request: the per-node reference the vectorised ranking must
agree with, and what `GET /route/explain` and `fedai route explain` show operators."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedai.protocol.messages import ModelInfo, price_msat
from fedai_router.node_state import NodeState
from fedai_router.scheduler.types import Demand, Policy, ScoreParts


@dataclass(frozen=True, slots=True)
class Explanation:
    pubkey: str
    verdict: str  # "ok" or the first filter that refused the node (see types.REASONS)
    max_price_msat: int | None
    parts: ScoreParts | None  # only for eligible nodes

    def to_dict(self) -> dict[str, object]:
        entry: dict[str, object] = {"node": self.pubkey, "verdict": self.verdict, "max_price_msat": self.max_price_msat}
        if self.parts is not None:
            entry["score"] = round(self.parts.total, 6)
            entry["parts"] = {
                name: round(getattr(self.parts, name), 6)
                for name in ("price", "load", "latency", "reliability", "trust", "unverified")
            }
        return entry


def verdict(node: NodeState, demand: Demand, now: float, policy: Policy) -> tuple[str, ModelInfo | None, int | None]:
    """The first filter that refuses `node` for `demand` ("ok" if none), with its model and max price."""
    info = node.models.get(demand.model)
    if info is None:
        return "model", None, None
    if demand.pin and node.pubkey not in demand.pin:
        return "pinned_out", info, None
    if node.pubkey in demand.exclude:
        return "excluded", info, None
    if node.held:
        return "held", info, None
    if demand.job_type is not None and demand.job_type not in info.job_types:
        return "job_type", info, None
    if demand.max_tokens > info.max_tokens or demand.input_tokens + demand.max_tokens > info.context_window:
        return "context", info, None
    ttl = policy.heartbeat_ttl_s if node.heartbeat else policy.announce_ttl_s
    if now - node.last_seen > ttl:
        return "stale", info, None
    if node.cooldown_until > now:
        return "cooldown", info, None
    if node.load >= node.capacity:
        return "busy", info, None
    price = price_msat(info.pricing, demand.input_tokens, demand.max_tokens)
    if demand.max_price_msat is not None and price > demand.max_price_msat:
        return "price", info, price
    return "ok", info, price


def score_parts(node: NodeState, price: int, cheapest: int, info: ModelInfo, policy: Policy) -> ScoreParts:
    w = policy.weights
    health = node.health
    observed = health.latency_samples >= policy.min_latency_samples and health.latency_ms is not None
    latency_ms = health.latency_ms if observed and health.latency_ms is not None else info.latency_estimate_ms
    return ScoreParts(
        price=w.price * price / max(1, cheapest),
        load=w.load * node.load / max(1, node.capacity),
        latency=w.latency_per_s * latency_ms / 1000,
        reliability=w.reliability * (1.0 - health.reliability),
        trust=w.trust * (1.0 - node.trust),
        unverified=0.0 if node.verified else w.unverified,
    )


def explain(nodes: Iterable[NodeState], demand: Demand, *, now: float, policy: Policy) -> list[Explanation]:
    """Every node that serves the model with its verdict; eligible ones with score parts, best first."""
    judged = [(node, *verdict(node, demand, now, policy)) for node in nodes]
    judged = [j for j in judged if j[1] != "model"]
    eligible_prices = [price for _, v, _, price in judged if v == "ok" and price is not None]
    cheapest = max(1, min(eligible_prices)) if eligible_prices else 1
    out = []
    for node, v, info, price in judged:
        parts = score_parts(node, price, cheapest, info, policy) if v == "ok" and info and price is not None else None
        out.append(Explanation(node.pubkey, v, price, parts))
    out.sort(key=lambda e: (e.parts is None, e.parts.total if e.parts else 0.0, e.pubkey))
    return out
