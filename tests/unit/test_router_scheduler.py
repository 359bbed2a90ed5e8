"""The scheduler's pure functions: filters, scores, live load, pins, the typed reason when nothing fits, and the
vectorised ranking agreeing with the per-node reference (`explain`) on random registries."""

from __future__ import annotations

import random

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_router.index import NodeIndex
from fedai_router.node_state import NodeState
from fedai_router.scheduler import Demand, Policy, Weights, explain, rank
from fedai_router.scheduler.rank import rank_columns, rank_rows

NOW = 1_800_000_000.0
POLICY = Policy(heartbeat_ttl_s=30, announce_ttl_s=900)


def key(name: str) -> str:
    return (name * 64)[:64] if len(name) == 1 else name


def add(
    index: NodeIndex,
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
    aliases: list[str] | None = None,
) -> NodeState:
    info = ModelInfo(
        id=model,
        context_window=context,
        max_tokens=max_tokens,
        latency_estimate_ms=latency_ms,
        pricing=Pricing(input_msat=price, output_msat=price),
        job_types=job_types or ["text-generation"],
        aliases=aliases or [],
    )
    desc = NodeDescriptor(
        endpoint=f"http://{name}", models=[info], capacity=Capacity(max_concurrent=capacity, in_flight=reported)
    )
    node = index.upsert(key(name), desc, verified=verified, heartbeat=heartbeat, seen=NOW - seen_ago)
    node.in_flight = in_flight
    node.health.cooldown_until = NOW + cooldown if cooldown else 0.0
    index.sync(node)
    return node


def pick(index: NodeIndex, demand: Demand | None = None, k: int = 3, policy: Policy = POLICY) -> list[str]:
    demand = demand or Demand(model="m", input_tokens=10, max_tokens=10)
    ranked = rank(index.tables.get(demand.model), demand, now=NOW, policy=policy, k=k)
    return [c.node.pubkey[0] for c in ranked]


def test_cheapest_idle_node_first() -> None:
    index = NodeIndex()
    for name, price in (("a", 3000), ("b", 1000), ("c", 2000)):
        add(index, name, price=price)
    assert pick(index) == ["b", "c", "a"]


def test_live_load_moves_traffic_before_the_next_heartbeat() -> None:
    index = NodeIndex()
    add(index, "a", price=1000, capacity=2, in_flight=1)
    add(index, "b", price=1200, capacity=2)
    assert pick(index)[0] == "b"  # 1.0 + 0.5 load > 1.2 + 0


def test_begin_and_end_update_the_table_at_once() -> None:
    index = NodeIndex()
    a = add(index, "a", capacity=1)
    add(index, "b", capacity=1, price=2000)
    index.begin(a)
    assert pick(index) == ["b"]
    index.end(a)
    assert pick(index) == ["a", "b"]


def test_full_nodes_are_filtered_counting_other_routers_reported_load() -> None:
    index = NodeIndex()
    add(index, "a", capacity=1, in_flight=1)
    add(index, "b", capacity=2, reported=2)
    add(index, "c", capacity=2, reported=1)
    assert pick(index) == ["c"]


def test_stale_cooldown_context_job_type_and_price_filters() -> None:
    index = NodeIndex()
    add(index, "a", seen_ago=60)  # stale heartbeat
    add(index, "b", cooldown=10)
    add(index, "c", context=150)  # 100 + 100 does not fit
    add(index, "d", job_types=["text-generation"])
    add(index, "e", price=10_000, job_types=["embedding"])  # 200 tokens * 10 msat = 2000 > 500
    add(index, "f", price=1000, job_types=["embedding"])  # 200 msat
    demand = Demand(model="m", input_tokens=100, max_tokens=100, job_type="embedding", max_price_msat=500)
    assert pick(index, demand) == ["f"]
    verdicts = {e.pubkey[0]: e.verdict for e in explain(index.nodes.values(), demand, now=NOW, policy=POLICY)}
    assert verdicts == {"a": "job_type", "b": "job_type", "c": "job_type", "d": "job_type", "e": "price", "f": "ok"}


def test_explain_names_the_first_failing_filter() -> None:
    index = NodeIndex()
    add(index, "a", seen_ago=60)
    add(index, "b", cooldown=10)
    add(index, "c", context=15)
    add(index, "d", capacity=1, in_flight=1)
    add(index, "e")
    add(index, "9", model="other")
    demand = Demand(model="m", input_tokens=10, max_tokens=10)
    result = explain(index.nodes.values(), demand, now=NOW, policy=POLICY)
    assert [(e.pubkey[0], e.verdict) for e in result] == [
        ("e", "ok"),
        ("a", "stale"),
        ("b", "cooldown"),
        ("c", "context"),
        ("d", "busy"),
    ]
    assert result[0].parts is not None and result[0].parts.price == 1.0
    assert result[0].to_dict()["parts"]["price"] == 1.0


def test_announced_nodes_use_the_longer_ttl_and_rank_after_verified() -> None:
    index = NodeIndex()
    add(index, "a", seen_ago=300, heartbeat=False, verified=False)
    add(index, "b", price=1200)
    assert pick(index) == ["b", "a"]


def test_pin_exclude_and_k() -> None:
    index = NodeIndex()
    for c in "abcde":
        add(index, c)
    assert pick(index, Demand(model="m", input_tokens=1, max_tokens=1, exclude=frozenset({key("a")})), k=2) == [
        "b",
        "c",
    ]
    assert pick(index, Demand(model="m", input_tokens=1, max_tokens=1, pin=frozenset({key("d")}))) == ["d"]


def test_pinned_node_that_is_down_is_503_naming_why() -> None:
    index = NodeIndex()
    add(index, "a", cooldown=5)
    add(index, "b")
    with pytest.raises(FedaiError) as err:
        pick(index, Demand(model="m", input_tokens=1, max_tokens=1, pin=frozenset({key("a")})))
    assert (err.value.code, err.value.status) == ("no_capacity", 503)
    assert "pinned_out=1" in err.value.message and "cooldown=1" in err.value.message


def test_pin_to_a_node_without_the_model_is_invalid_request() -> None:
    index = NodeIndex()
    add(index, "a")
    with pytest.raises(FedaiError) as err:
        pick(index, Demand(model="m", input_tokens=1, max_tokens=1, pin=frozenset({key("z")})))
    assert err.value.code == "invalid_request"


def test_aliases_route_to_the_model() -> None:
    index = NodeIndex()
    add(index, "a", model="llama-3.2-1b-q4", aliases=["llama-small"])
    assert pick(index, Demand(model="llama-small", input_tokens=1, max_tokens=1)) == ["a"]


def test_deterministic_tie_break() -> None:
    index = NodeIndex()
    for c in "cab":
        add(index, c)
    assert pick(index) == ["a", "b", "c"]


def test_weighted_random_spreads_the_first_choice_among_the_best() -> None:
    index = NodeIndex()
    for c in "abc":
        add(index, c)
    policy = Policy(heartbeat_ttl_s=30, announce_ttl_s=900, random_top_n=3)
    rng = random.Random(7)
    firsts = {
        rank(index.tables["m"], Demand(model="m", input_tokens=1, max_tokens=1), now=NOW, policy=policy, rng=rng)[
            0
        ].node.pubkey[0]
        for _ in range(60)
    }
    assert firsts == {"a", "b", "c"}


def test_unreliable_and_untrusted_nodes_rank_lower() -> None:
    index = NodeIndex()
    flaky = add(index, "a")
    add(index, "b", price=1100)
    for i in range(30):  # old failures, each after the previous cooldown: the record remains, the cooldown is over
        index.failed(flaky, "upstream_error", now=NOW - 1000 + 31 * i)
    assert flaky.health.reliability < 0.5
    assert pick(index)[0] == "b"


def test_unknown_model_is_404() -> None:
    index = NodeIndex()
    add(index, "a", model="other")
    with pytest.raises(FedaiError) as err:
        pick(index)
    assert (err.value.code, err.value.status) == ("unknown_model", 404)


def test_busy_is_503_naming_the_reason() -> None:
    index = NodeIndex()
    add(index, "a", capacity=1, in_flight=1)
    add(index, "b", cooldown=5)
    with pytest.raises(FedaiError) as err:
        pick(index)
    assert (err.value.code, err.value.status) == ("no_capacity", 503)
    assert "busy=1" in err.value.message and "cooldown=1" in err.value.message
    assert err.value.retry_after_ms == 1000


def test_too_long_for_every_node_is_invalid_request() -> None:
    index = NodeIndex()
    add(index, "a", context=100)
    with pytest.raises(FedaiError) as err:
        pick(index, Demand(model="m", input_tokens=90, max_tokens=20))
    assert err.value.code == "invalid_request"


def test_removed_and_re_added_nodes_reuse_rows() -> None:
    index = NodeIndex()
    add(index, "a")
    add(index, "b")
    index.remove(key("a"))
    assert pick(index) == ["b"]
    add(index, "c")
    assert pick(index) == ["b", "c"]
    assert index.tables["m"].n == 2


def test_held_nodes_are_never_ranked_and_say_why() -> None:
    """A node drained or banned by an operator (`NodeIndex.hold`) is out, now and when it registers later."""
    index = NodeIndex()
    add(index, "a", price=500)
    add(index, "b", price=2000)
    index.hold(frozenset({key("a"), key("c")}))
    assert pick(index) == ["b"]
    add(index, "c", price=100)  # held before it arrived
    assert pick(index) == ["b"]
    verdicts = {e.pubkey: e.verdict for e in explain(index.nodes.values(), Demand("m", 10, 10), now=NOW, policy=POLICY)}
    assert verdicts == {key("a"): "held", key("b"): "ok", key("c"): "held"}
    index.hold(frozenset({key("b")}))
    assert pick(index) == ["c", "a"]
    index.hold(frozenset({key("a"), key("b"), key("c")}))
    with pytest.raises(FedaiError) as err:
        pick(index)
    assert "held=3" in err.value.message


@pytest.mark.parametrize("seed", range(30))
def test_both_rankings_agree_with_the_per_node_reference(seed: int) -> None:
    """The vectorised path (large tables) and the loop (small tables) both match `explain`."""
    rng = random.Random(seed)
    index = NodeIndex()
    for i in range(rng.randint(1, 80)):
        add(
            index,
            f"{i:064x}",
            price=rng.choice([500, 1000, 1500, 2000]),
            capacity=rng.randint(1, 4),
            in_flight=rng.randint(0, 3),
            seen_ago=rng.choice([1, 5, 45]),
            cooldown=rng.choice([0, 0, 0, 5]),
            context=rng.choice([64, 4096]),
            verified=rng.random() > 0.2,
            latency_ms=rng.choice([0, 50, 400]),
        )
    index.hold(frozenset(rng.sample(sorted(index.nodes), k=len(index.nodes) // 5)))
    for node in list(index.nodes.values())[::3]:
        node.health.successes, node.health.failures = rng.randint(0, 50), rng.randint(0, 10)
        node.manifest_trust = rng.random()
        index.sync(node)
    demand = Demand(
        model="m",
        input_tokens=rng.randint(1, 60),
        max_tokens=rng.randint(1, 40),
        max_price_msat=rng.choice([None, 50, 100]),
    )
    policy = Policy(heartbeat_ttl_s=30, announce_ttl_s=900, weights=Weights(latency_per_s=rng.random() * 3))
    reference = [e for e in explain(index.nodes.values(), demand, now=NOW, policy=policy) if e.verdict == "ok"]
    table = index.tables["m"]
    for ranking in (rank_rows, rank_columns):
        if not reference:
            with pytest.raises(FedaiError) as err:
                ranking(table, demand, now=NOW, policy=policy, k=5)
            assert err.value.code in ("no_capacity", "invalid_request")
            continue
        ranked = ranking(table, demand, now=NOW, policy=policy, k=5)
        assert [c.node.pubkey for c in ranked] == [e.pubkey for e in reference[:5]], ranking.__name__
        for c, e in zip(ranked, reference, strict=False):
            assert e.parts is not None and c.score == pytest.approx(e.parts.total)
            assert c.max_price_msat == e.max_price_msat


def test_both_rankings_give_the_same_refusal() -> None:
    index = NodeIndex()
    add(index, "a", capacity=1, in_flight=1)
    add(index, "b", cooldown=5)
    add(index, "c", seen_ago=100)
    messages = set()
    for ranking in (rank_rows, rank_columns):
        with pytest.raises(FedaiError) as err:
            ranking(index.tables["m"], Demand(model="m", input_tokens=1, max_tokens=1), now=NOW, policy=POLICY, k=3)
        messages.add((err.value.code, err.value.message))
    assert messages == {
        (
            "no_capacity",
            "no node can take this request now: 1 node not seen recently, 1 node cooling down after a failure, "
            "1 node busy (every slot in use) [stale=1, cooldown=1, busy=1]",
        )
    }


def test_a_request_too_long_for_every_node_says_so_in_words_with_the_largest_max_tokens() -> None:
    """What a user sees for max_tokens=100000: the filter in words and the max_tokens that would fit, in both
    rankings; the counts by filter name stay for scripts."""
    index = NodeIndex()
    add(index, "a", context=8192, max_tokens=8192)
    add(index, "b", context=4096, max_tokens=2048)
    messages = set()
    for ranking in (rank_rows, rank_columns):
        with pytest.raises(FedaiError) as err:
            ranking(
                index.tables["m"], Demand(model="m", input_tokens=12, max_tokens=100_000), now=NOW, policy=POLICY, k=3
            )
        messages.add((err.value.code, err.value.message))
    assert messages == {
        (
            "invalid_request",
            "no node can take this request: 2 nodes with a context window too small for the prompt plus max_tokens "
            "[context=2]; with this prompt a node takes at most max_tokens=8180",
        )
    }


def test_a_prompt_longer_than_every_context_window_says_so() -> None:
    index = NodeIndex()
    add(index, "a", context=100)
    with pytest.raises(FedaiError) as err:
        pick(index, Demand(model="m", input_tokens=150, max_tokens=1))
    assert err.value.message.endswith("[context=1]; the prompt alone is longer than any node's context window")


def test_ranking_10k_nodes_returns_k() -> None:
    index = NodeIndex()
    for i in range(10_000):
        add(index, f"{i:064x}", price=1000 + i % 97)
    best = rank(index.tables["m"], Demand(model="m", input_tokens=1, max_tokens=1), now=NOW, policy=POLICY, k=5)
    assert len(best) == 5
    assert all(c.max_price_msat == best[0].max_price_msat for c in best)
