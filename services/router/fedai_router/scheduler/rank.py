"""Rank the nodes of one model table for a demand: vectorised filters, scores, top-k. Pure: it reads the
table and returns candidates; `explain.py` is the per-node reference it must agree with."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import numpy as np

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import ModelInfo
from fedai_router.node_state import NodeState
from fedai_router.scheduler.explain import score_parts, verdict
from fedai_router.scheduler.table import B, F, ModelTable
from fedai_router.scheduler.types import REASONS, Candidate, Demand, Policy


def _rows_of(table: ModelTable, pubkeys: frozenset[str]) -> list[int]:
    return [table.row_of[p] for p in pubkeys if p in table.row_of]


def filter_masks(table: ModelTable, demand: Demand, now: float, policy: Policy) -> tuple[list[tuple[str, B]], F]:
    """Each filter's pass mask, in REASONS order (after `model`), and the max price of every row."""
    n = table.n
    alive = table.alive[:n]
    masks: list[tuple[str, B]] = []
    if demand.pin:
        pinned = np.zeros(n, dtype=np.bool_)
        pinned[_rows_of(table, demand.pin)] = True
        masks.append(("pinned_out", pinned))
    if demand.exclude:
        kept = np.ones(n, dtype=np.bool_)
        kept[_rows_of(table, demand.exclude)] = False
        masks.append(("excluded", kept))
    masks.append(("held", ~table.held[:n]))
    if demand.job_type is not None:
        if demand.job_type == "text-generation":
            masks.append(("job_type", table.default_job[:n].copy()))
        else:
            job = np.zeros(n, dtype=np.bool_)
            for row, _, info in table.rows():
                job[row] = demand.job_type in info.job_types
            masks.append(("job_type", job))
    fits = demand.max_tokens <= table.max_tokens[:n]
    masks.append(("context", fits & (demand.input_tokens + demand.max_tokens <= table.context_window[:n])))
    ttl = np.where(table.announced[:n], policy.announce_ttl_s, policy.heartbeat_ttl_s)
    masks.append(("stale", now - table.last_seen[:n] <= ttl))
    masks.append(("cooldown", table.cooldown_until[:n] <= now))
    masks.append(("busy", table.load[:n] < table.capacity[:n]))
    price = np.ceil((demand.input_tokens * table.input_msat[:n] + demand.max_tokens * table.output_msat[:n]) / 1000)
    if demand.max_price_msat is not None:
        masks.append(("price", price <= demand.max_price_msat))
    return [(name, m & alive) for name, m in masks], price


def score_columns(table: ModelTable, eligible: B, price: F, policy: Policy) -> dict[str, F]:
    """Each score part for every row (meaningful where `eligible`)."""
    n = table.n
    w = policy.weights
    cheapest = max(1.0, float(price[eligible].min())) if eligible.any() else 1.0
    observed = table.latency_samples[:n] >= policy.min_latency_samples
    latency_ms = np.where(observed, table.latency_obs_ms[:n], table.latency_est_ms[:n])
    return {
        "price": w.price * price / cheapest,
        "load": w.load * table.load[:n] / np.maximum(table.capacity[:n], 1.0),
        "latency": w.latency_per_s * latency_ms / 1000,
        "reliability": w.reliability * (1.0 - table.reliability[:n]),
        "trust": w.trust * (1.0 - table.trust[:n]),
        "unverified": np.where(table.verified[:n], 0.0, w.unverified),
    }


# Up to this many nodes a plain loop beats numpy's per-operation overhead (measured: ~8 µs vs ~60 µs for 2).
SMALL_TABLE = 32


def rank(
    table: ModelTable | None,
    demand: Demand,
    *,
    now: float,
    policy: Policy,
    k: int = 3,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """The `k` best nodes for `demand`, best first (ties: lower pubkey). Raises a typed error naming why none fit."""
    if table is None or len(table) == 0:
        raise FedaiError(ErrorCode.UNKNOWN_MODEL, f"no node serves model {demand.model!r}")
    ranked = (rank_rows if len(table) <= SMALL_TABLE else rank_columns)(table, demand, now=now, policy=policy, k=k)
    if policy.random_top_n > 1 and len(ranked) > 1:
        ranked = _weighted_first(ranked, policy.random_top_n, rng or random.Random())
    return ranked


def rank_rows(table: ModelTable, demand: Demand, *, now: float, policy: Policy, k: int) -> list[Candidate]:
    """Node by node, with the same filters and scores as `explain` (for small tables)."""
    refused: Counter[str] = Counter()
    eligible: list[tuple[NodeState, ModelInfo, int]] = []
    for _, node, info in table.rows():
        why, _, price = verdict(node, demand, now, policy)
        if why != "ok" or price is None:
            refused[why] += 1
            continue
        eligible.append((node, info, price))
    if not eligible:
        raise no_route(demand, {reason: refused[reason] for reason in REASONS if refused[reason]}, table)
    cheapest = min(price for _, _, price in eligible)
    scored = [
        (score_parts(node, price, cheapest, info, policy).total, int(node.pubkey[:16], 16), node, info, price)
        for node, info, price in eligible
    ]
    best = heapq.nsmallest(k, scored, key=lambda s: (s[0], s[1]))
    return [Candidate(node=node, model=info, max_price_msat=price, score=score) for score, _, node, info, price in best]


def rank_columns(table: ModelTable, demand: Demand, *, now: float, policy: Policy, k: int) -> list[Candidate]:
    """Vectorised over the table's columns (for large tables)."""
    masks, price = filter_masks(table, demand, now, policy)
    eligible = table.alive[: table.n].copy()
    refused: dict[str, int] = {}
    for name, mask in masks:
        dropped = int((eligible & ~mask).sum())
        if dropped:
            refused[name] = dropped
        eligible &= mask
    rows = np.flatnonzero(eligible)
    if rows.size == 0:
        raise no_route(demand, refused, table)
    parts = score_columns(table, eligible, price, policy)
    total = sum(parts.values())
    assert isinstance(total, np.ndarray)
    scores = total[rows]
    if rows.size > k:
        keep = np.argpartition(scores, k - 1)[:k]
        # argpartition may cut through a tie at the k-th score: take every row tied with it, then sort
        keep = np.flatnonzero(scores <= scores[keep].max())
        rows, scores = rows[keep], scores[keep]
    result = []
    for r in rows[np.lexsort((table.tiebreak[rows], scores))[:k]]:
        node, info = table.nodes[r], table.infos[r]
        assert node is not None and info is not None
        result.append(Candidate(node=node, model=info, max_price_msat=int(price[r]), score=float(total[r])))
    return result


def _weighted_first(ranked: list[Candidate], top_n: int, rng: random.Random) -> list[Candidate]:
    """Move one of the best `top_n` to the front, chosen with weight 1/score (better scores more likely)."""
    pool = ranked[:top_n]
    first = rng.choices(range(len(pool)), weights=[1.0 / max(c.score, 1e-9) for c in pool])[0]
    return [ranked[first], *ranked[:first], *ranked[first + 1 :]]


# How each filter's refusals read to people, after "N node(s)" (participles: they read for one node or many).
REFUSED_AS = {
    "model": "not serving the model",
    "pinned_out": "not among the pinned nodes",
    "excluded": "excluded by the request",
    "held": "held by the operator (drained or banned)",
    "job_type": "not doing this job type",
    "context": "with a context window too small for the prompt plus max_tokens",
    "stale": "not seen recently",
    "cooldown": "cooling down after a failure",
    "busy": "busy (every slot in use)",
    "price": "above the price cap",
}


def _most_max_tokens(table: ModelTable, demand: Demand) -> int:
    """The largest max_tokens any live node of `table` would accept with this prompt (≤ 0: the prompt alone is
    too long for every node)."""
    n = table.n
    room = np.minimum(table.max_tokens[:n], table.context_window[:n] - demand.input_tokens)[table.alive[:n]]
    return int(room.max()) if room.size else 0


def refusal_text(refused: dict[str, int]) -> str:
    """`1 node busy (every slot in use), 2 nodes not seen recently [busy=1, stale=2]`: for people, then the
    counts by filter name (REASONS) for scripts and logs."""
    said = ", ".join(f"{n} {'node' if n == 1 else 'nodes'} {REFUSED_AS[reason]}" for reason, n in refused.items())
    counts = ", ".join(f"{reason}={n}" for reason, n in refused.items())
    return f"{said} [{counts}]"


def no_route(demand: Demand, refused: dict[str, int], table: ModelTable | None = None) -> FedaiError:
    """The typed error for "nothing fits", naming in words how many nodes each filter refused (and, when the
    context filter refused them, the largest max_tokens a node would take)."""
    text = refusal_text(refused)
    if set(refused) == {"pinned_out"}:
        return FedaiError(ErrorCode.INVALID_REQUEST, f"none of the pinned nodes serves {demand.model!r}")
    if set(refused) == {"context"}:
        hint = ""
        if table is not None:
            most = _most_max_tokens(table, demand)
            hint = (
                f"; with this prompt a node takes at most max_tokens={most}"
                if most > 0
                else "; the prompt alone is longer than any node's context window"
            )
        return FedaiError(ErrorCode.INVALID_REQUEST, f"no node can take this request: {text}{hint}")
    return FedaiError(ErrorCode.NO_CAPACITY, f"no node can take this request now: {text}", retry_after_ms=1000)
