"""The scheduler's pure functions: filters, scoring, live load, and the typed reason when nothing fits."""

from __future__ import annotations

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_router.registry import NodeState
from fedai_router.scheduler import Demand, rank

NOW = 1_800_000_000.0


def node(
    name: str,
    *,
    model: str = "m",
    price: int = 1000,
    capacity: int = 2,
    in_flight: int = 0,
    reported: int = 0,
    seen_ago: float = 1.0,
    heartbeat: bool = True,
    verified: bool = True,
    cooldown: float = 0.0,
    context: int = 4096,
    max_tokens: int = 1024,
    job_types: list[str] | None = None,
    latency_ms: float = 0.0,
) -> NodeState:
    info = ModelInfo(
        id=model, context_window=context, max_tokens=max_tokens, latency_estimate_ms=latency_ms,
        pricing=Pricing(input_msat=price, output_msat=price), job_types=job_types or ["text-generation"],
    )  # fmt: skip
    desc = NodeDescriptor(endpoint=f"http://{name}", models=[info], capacity=Capacity(max_concurrent=capacity,
                          in_flight=reported))  # fmt: skip
    state = NodeState(pubkey=name * 64 if len(name) == 1 else name, descriptor=desc, verified=verified,
                      heartbeat=heartbeat, last_seen=NOW - seen_ago, reported_in_flight=reported)  # fmt: skip
    state.in_flight = in_flight
    state.cooldown_until = NOW + cooldown if cooldown else 0.0
    return state


def pick(nodes: list[NodeState], demand: Demand | None = None, k: int = 3) -> list[str]:
    demand = demand or Demand(model="m", input_tokens=10, max_tokens=10)
    return [c.node.pubkey[0] for c in rank(nodes, demand, now=NOW, heartbeat_ttl_s=30, announce_ttl_s=900, k=k)]


def test_cheapest_idle_node_first() -> None:
    assert pick([node("a", price=3000), node("b", price=1000), node("c", price=2000)]) == ["b", "c", "a"]


def test_live_load_moves_traffic_before_the_next_heartbeat() -> None:
    cheap_busy = node("a", price=1000, capacity=2, in_flight=1)
    dear_idle = node("b", price=1200, capacity=2)
    assert pick([cheap_busy, dear_idle])[0] == "b"  # 1.0 + 0.5 load > 1.2 + 0


def test_full_nodes_are_filtered_counting_other_routers_reported_load() -> None:
    full_here = node("a", capacity=1, in_flight=1)
    full_elsewhere = node("b", capacity=2, reported=2)
    free = node("c", capacity=2, reported=1)
    assert pick([full_here, full_elsewhere, free]) == ["c"]


def test_reported_load_is_not_double_counted_with_our_own() -> None:
    n = node("a", capacity=2, reported=1)
    n.local_at_report = 1  # the one reported in flight was ours
    n.in_flight = 1
    assert n.load == 1
    assert pick([n]) == ["a"]


def test_stale_cooldown_context_job_type_and_price_filters() -> None:
    demand = Demand(model="m", input_tokens=100, max_tokens=100, job_type="embedding", max_price_msat=500)
    nodes = [
        node("a", seen_ago=60),  # stale heartbeat
        node("b", cooldown=10),
        node("c", context=150),  # 100 + 100 does not fit
        node("d", job_types=["text-generation"]),
        node("e", price=10_000, job_types=["embedding"]),  # 200 tokens * 10 msat = 2000 > 500
        node("f", price=1000, job_types=["embedding"]),  # 200 msat
    ]
    assert pick(nodes, demand) == ["f"]


def test_announced_nodes_use_the_longer_ttl_and_rank_after_verified() -> None:
    announced = node("a", seen_ago=300, heartbeat=False, verified=False)
    verified = node("b", price=1200)
    assert pick([announced, verified]) == ["b", "a"]


def test_exclude_and_k() -> None:
    nodes = [node(c) for c in "abcde"]
    assert pick(nodes, Demand(model="m", input_tokens=1, max_tokens=1, exclude=frozenset({"a" * 64})), k=2) == [
        "b",
        "c",
    ]


def test_deterministic_tie_break() -> None:
    assert pick([node("c"), node("a"), node("b")]) == ["a", "b", "c"]


def test_unknown_model_is_404() -> None:
    with pytest.raises(FedaiError) as err:
        pick([node("a", model="other")])
    assert (err.value.code, err.value.status) == ("unknown_model", 404)


def test_busy_is_503_naming_the_reason() -> None:
    with pytest.raises(FedaiError) as err:
        pick([node("a", capacity=1, in_flight=1), node("b", cooldown=5)])
    assert (err.value.code, err.value.status) == ("no_capacity", 503)
    assert "busy=1" in err.value.message and "cooldown=1" in err.value.message
    assert err.value.retry_after_ms == 1000


def test_too_long_for_every_node_is_invalid_request() -> None:
    with pytest.raises(FedaiError) as err:
        pick([node("a", context=100)], Demand(model="m", input_tokens=90, max_tokens=20))
    assert err.value.code == "invalid_request"


def test_ranking_10k_nodes_returns_k() -> None:
    nodes = [node(f"{i:064x}", price=1000 + i % 97) for i in range(10_000)]
    best = rank(nodes, Demand(model="m", input_tokens=1, max_tokens=1), now=NOW, heartbeat_ttl_s=30,
                announce_ttl_s=900, k=5)  # fmt: skip
    assert len(best) == 5
    assert all(c.max_price_msat == best[0].max_price_msat for c in best)
