"""Filter nodes that can serve a demand, score them, return the best few. Pure: state in, ranking out."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import DEFAULT_JOB_TYPE, ModelInfo, price_msat
from fedai_router.registry import NodeState

# Score weights (lower score is better). Price is relative to the cheapest eligible node.
WEIGHT_PRICE = 1.0
WEIGHT_LOAD = 1.0
WEIGHT_LATENCY_PER_S = 1.0
PENALTY_UNVERIFIED = 0.5


@dataclass(frozen=True, slots=True)
class Demand:
    model: str
    input_tokens: int
    max_tokens: int
    job_type: str | None = None
    max_price_msat: int | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    node: NodeState
    model: ModelInfo
    max_price_msat: int  # price if the node produced all max_tokens
    score: float


def _verdict(
    node: NodeState, demand: Demand, now: float, heartbeat_ttl_s: float, announce_ttl_s: float
) -> tuple[str, ModelInfo | None]:
    model = node.models.get(demand.model)
    if model is None:
        return "model", None
    if node.pubkey in demand.exclude:
        return "excluded", model
    if demand.job_type not in (None, DEFAULT_JOB_TYPE) and demand.job_type not in model.job_types:
        return "job_type", model
    if demand.max_tokens > model.max_tokens or demand.input_tokens + demand.max_tokens > model.context_window:
        return "context", model
    ttl = heartbeat_ttl_s if node.heartbeat else announce_ttl_s
    if now - node.last_seen > ttl:
        return "stale", model
    if node.cooldown_until > now:
        return "cooldown", model
    if node.load >= node.capacity:
        return "busy", model
    return "ok", model


def rank(
    nodes: Iterable[NodeState],
    demand: Demand,
    *,
    now: float,
    heartbeat_ttl_s: float,
    announce_ttl_s: float,
    k: int = 3,
) -> list[Candidate]:
    """The `k` best nodes for `demand`, best first. Raises a typed error naming why none fit."""
    eligible: list[tuple[NodeState, ModelInfo, int]] = []
    refused: Counter[str] = Counter()
    for node in nodes:
        verdict, model = _verdict(node, demand, now, heartbeat_ttl_s, announce_ttl_s)
        if verdict != "ok" or model is None:
            refused[verdict] += 1
            continue
        cost = price_msat(model.pricing, demand.input_tokens, demand.max_tokens)
        if demand.max_price_msat is not None and cost > demand.max_price_msat:
            refused["price"] += 1
            continue
        eligible.append((node, model, cost))
    if not eligible:
        raise _no_route(demand, refused)
    cheapest = max(1, min(cost for _, _, cost in eligible))
    scored = (
        Candidate(
            node=node,
            model=model,
            max_price_msat=cost,
            score=WEIGHT_PRICE * cost / cheapest
            + WEIGHT_LOAD * node.load / node.capacity
            + WEIGHT_LATENCY_PER_S * model.latency_estimate_ms / 1000
            + (0.0 if node.verified else PENALTY_UNVERIFIED),
        )
        for node, model, cost in eligible
    )
    return heapq.nsmallest(k, scored, key=lambda c: (c.score, c.node.pubkey))


def _no_route(demand: Demand, refused: Counter[str]) -> FedaiError:
    serving = sum(n for reason, n in refused.items() if reason != "model")
    if serving == 0:
        return FedaiError(ErrorCode.UNKNOWN_MODEL, f"no node serves model {demand.model!r}")
    reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(refused.items()) if reason != "model")
    if set(refused) - {"model"} <= {"context"}:
        return FedaiError(ErrorCode.INVALID_REQUEST, f"prompt plus max_tokens does not fit any node ({reasons})")
    return FedaiError(ErrorCode.NO_CAPACITY, f"no node can take this request now ({reasons})", retry_after_ms=1000)
