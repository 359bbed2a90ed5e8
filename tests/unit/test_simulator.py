"""The simulator drives the real scheduler in simulated time: the seed system's failure case (router vs seed
mode), determinism, failover and recovery, flapping, price changes, and clear scenario errors."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from fedai.protocol.messages import Pricing, price_msat
from fedai_router.config import RouterSettings
from fedai_router.planning import SPARE_CANDIDATES
from fedai_sim import RunResult, ScenarioError, builtin, builtin_names, parse, simulate
from fedai_sim.fleet import SimNode
from fedai_sim.report import document, markdown
from fedai_sim.scenario import RouterConfig, from_dict


def nodes(run: RunResult) -> dict[str, SimNode]:
    return {n.name: n for n in run.nodes}


def served_by(run: RunResult, name: str, start: float, end: float) -> int:
    """Requests arriving in [start, end) that `name` served."""
    return sum(1 for r in run.requests if r.node == name and start <= r.arrival < end)


def scenario(nodes: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    data: dict[str, Any] = {
        "name": "t",
        "arrivals": [{"rate_per_s": 8.0, "duration_s": 40.0}],
        "requests": {"input_tokens": [100, 300], "max_tokens": [64, 128]},
        "nodes": nodes,
        "events": events or [],
    }
    data.update(extra)
    return from_dict(data)


def node(name: str, price: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "capacity": 8, "input_msat": price, "output_msat": price, "latency_ms": 500, **extra}


# --- the seed system's failure case ------------------------------------------------------------------------


def test_seed_failure_in_router_mode_never_sends_a_node_more_than_its_capacity_and_spreads_load() -> None:
    run = simulate(builtin("seed-failure"), "router")
    assert len(run.requests) == 200
    for n in run.nodes:
        assert n.max_sent <= n.capacity, (n.name, n.max_sent, n.capacity)
        assert n.max_held <= n.capacity, (n.name, n.max_held, n.capacity)
    assert all(r.outcome == "ok" for r in run.requests)
    shares = sorted((n.served / 200 for n in run.nodes), reverse=True)
    assert shares[0] <= 0.15  # no node takes more than its fair part of the burst
    assert sum(1 for s in shares if s > 0) == len(run.nodes)
    assert nodes(run)["cheap"].max_sent == nodes(run)["cheap"].capacity  # the cheapest node is filled, not overfilled


def test_seed_failure_in_seed_mode_reproduces_the_overload() -> None:
    run = simulate(builtin("seed-failure"), "seed")
    cheap = nodes(run)["cheap"]
    assert cheap.served >= 190  # the seed saw 199 of 200
    assert cheap.max_sent >= 10 * cheap.capacity  # ~11× its capacity
    assert all(n.max_sent <= n.capacity for n in run.nodes if n is not cheap)


def test_the_report_compares_the_modes() -> None:
    doc = document([simulate(builtin("seed-failure"), mode) for mode in ("router", "seed")])
    router, seed = doc["runs"]["router"]["totals"], doc["runs"]["seed"]["totals"]
    assert router["nodes_over_capacity"] == 0 and router["max_load"]["ratio"] <= 1.0
    assert seed["nodes_over_capacity"] == 1 and seed["max_load"]["node"] == "cheap" and seed["max_load"]["ratio"] > 10
    assert seed["latency_ms"]["p95"] > 3 * router["latency_ms"]["p95"]  # the overloaded node's queue
    text = markdown(doc)
    assert "`router` vs `seed` mode" in text and "| nodes sent more than their capacity | 0 | 1 |" in text


@pytest.mark.parametrize("name", ["steady", "failures", "price-war", "large"])
def test_router_mode_never_exceeds_capacity_in_any_builtin(name: str) -> None:
    run = simulate(builtin(name), "router")
    over = [(n.name, n.max_sent, n.capacity) for n in run.nodes if n.max_sent > n.capacity]
    assert over == []
    assert sum(r.outcome == "ok" for r in run.requests) / len(run.requests) > 0.98


# --- determinism ---------------------------------------------------------------------------------------------


def test_same_seed_same_report_and_another_seed_differs() -> None:
    s = builtin("failures")

    def report(seed: int) -> str:
        return json.dumps(document([simulate(s, "router", seed), simulate(s, "seed", seed)]), sort_keys=True)

    assert report(7) == report(7)
    assert report(7) != report(8)


# --- failures, recovery, flapping, prices ------------------------------------------------------------------


def arrived(run: RunResult, start: float, end: float) -> int:
    return sum(1 for r in run.requests if start <= r.arrival < end)


OUTAGE = [{"kind": "down", "node": "best", "at_s": 10.0, "duration_s": 10.0, "failure": "fast"}]


def test_a_node_failure_sends_traffic_elsewhere_and_the_node_gets_traffic_after_recovery() -> None:
    s = scenario(
        [node("best", 500), node("other", 1000, count=2)], OUTAGE, arrivals=[{"rate_per_s": 8.0, "duration_s": 60.0}]
    )
    run = simulate(s, "router")
    best = nodes(run)["best"]
    assert served_by(run, "best", 0, 9) > 0.9 * arrived(run, 0, 9)
    assert served_by(run, "best", 10, 20) == 0
    assert served_by(run, "other-0", 10, 20) + served_by(run, "other-1", 10, 20) == arrived(run, 10, 20)
    # cooldowns are capped (30 s), so by then the recovered node is back as the first choice
    assert served_by(run, "best", 52, 60) > 0.8 * arrived(run, 52, 60)
    assert best.failed > 0 and all(r.outcome == "ok" for r in run.requests)  # every failure failed over


def test_a_recovered_node_gets_traffic_again_within_one_backoff_step() -> None:
    """Down 10-20 s: probes at each cooldown's end fail (0.5, 1, 2, 4 s, then 8 s), so the probe that finds it
    up comes within one backoff step of recovery; calls already in flight when it broke do not escalate."""
    s = scenario([node("best", 500), node("other", 1000, count=2)], OUTAGE)
    run = simulate(s, "router")
    assert served_by(run, "best", 20, 28) > 0
    assert served_by(run, "best", 28, 34) > 0.8 * arrived(run, 28, 34)


def test_a_hung_node_holds_no_more_than_its_capacity_and_times_out_into_failover() -> None:
    s = scenario(
        [node("best", 500), node("other", 1000, count=2)],
        [{"kind": "down", "node": "best", "at_s": 5.0, "duration_s": 10.0, "failure": "timeout"}],
        router={"timeout_s": 2.0},
    )
    run = simulate(s, "router")
    best = nodes(run)["best"]
    assert best.max_sent <= best.capacity
    timed_out = [r for r in run.requests if r.attempts > 1 and r.outcome == "ok" and 5 <= r.arrival < 15]
    assert timed_out and all(r.latency_ms is not None and r.latency_ms >= 2000 for r in timed_out)
    assert served_by(run, "best", 25, 40) > 0


def test_a_flapping_node_ends_up_with_a_lower_share_than_a_steady_twin() -> None:
    run = simulate(builtin("failures"), "router")
    flappy, twin = nodes(run)["flappy"], nodes(run)["twin"]
    assert (flappy.pricing, flappy.capacity, flappy.latency_ms) == (twin.pricing, twin.capacity, twin.latency_ms)
    assert flappy.failed > 0
    assert flappy.served < twin.served / 2


def test_a_price_cut_shifts_share_to_the_cheaper_node() -> None:
    s = scenario(
        [node("a", 1000), node("b", 1300)],
        [{"kind": "price", "node": "b", "at_s": 20.0, "input_msat": 700, "output_msat": 700}],
    )
    run = simulate(s, "router")
    assert served_by(run, "a", 0, 20) > 2 * served_by(run, "b", 0, 20)
    assert served_by(run, "b", 21, 40) > 2 * served_by(run, "a", 21, 40)
    after = [r for r in run.requests if r.node == "b" and r.arrival >= 21]
    new_price = Pricing(input_msat=700, output_msat=700)
    assert after and all(r.price_msat == price_msat(new_price, r.input_tokens, r.output_tokens) for r in after)


def test_seed_mode_keeps_sending_to_a_full_node_until_its_heartbeat() -> None:
    s = scenario(
        [node("a", 500, capacity=2), node("b", 1000, capacity=2)],
        overload="reject",
        arrivals=[{"rate_per_s": 40.0, "requests": 30}],
        heartbeat_interval_s=30.0,
    )
    seed, router = simulate(s, "seed"), simulate(s, "router")
    assert nodes(seed)["a"].max_sent > 2 and nodes(seed)["a"].rejected > 0
    assert nodes(router)["a"].max_sent <= 2 and nodes(router)["a"].rejected == 0


# --- scenarios ------------------------------------------------------------------------------------------------


def test_every_builtin_parses_and_large_has_over_a_thousand_nodes() -> None:
    assert {"seed-failure", "steady", "failures", "price-war", "large"} <= set(builtin_names())
    for name in builtin_names():
        assert builtin(name).name == name
    assert len(builtin("large").node_names()) >= 1000


def test_router_defaults_follow_the_real_router() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(RouterSettings)}
    cfg = RouterConfig()
    assert cfg.spare_candidates == SPARE_CANDIDATES
    assert cfg.max_attempts == defaults["max_attempts"]
    assert cfg.timeout_s * 1000 == defaults["node_timeout_ms"]
    assert cfg.heartbeat_ttl_s * 1000 == defaults["heartbeat_ttl_ms"]
    assert (cfg.retry_budget_ratio, cfg.retry_budget_min_per_s) == (
        defaults["retry_budget_ratio"],
        defaults["retry_budget_min_per_s"],
    )


BASE = """
name = "x"
[[arrivals]]
rate_per_s = 1.0
duration_s = 10.0
[[nodes]]
name = "a"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'\n[[nodes]\n", "invalid TOML"),
        (BASE + "capcity = 3\n", "nodes[0]: Object contains unknown field `capcity`"),
        (BASE + "count = 0\n", "nodes[0].count: Expected `int` >= 1"),
        (BASE + "latency_ms = [900, 100]\n", "nodes[0].latency_ms: low 900 is above high 100"),
        (BASE + "failure_rate = 1.5\n", "nodes[0].failure_rate: Expected `float` <= 1.0"),
        (BASE.replace("duration_s = 10.0", "duration_s = 10.0\nrequests = 5"), "arrivals[0]: give exactly one of"),
        ('name = "x"\n[[nodes]]\nname = "a"\n', "Object missing required field `arrivals`"),
        (BASE + '[[events]]\nkind = "down"\nnode = "zz"\nat_s = 1.0\n', "events[0].node: no node or group named 'zz'"),
        (
            BASE + '[[events]]\nkind = "explode"\nnode = "a"\nat_s = 1.0\n',
            "events[0].kind: Invalid value 'explode' (kinds: down, up, flap, price)",
        ),
        (BASE + '[[events]]\nkind = "price"\nnode = "a"\nat_s = 1.0\n', "a price change needs input_msat or"),
        (BASE + "[[nodes]]\nname = 'a'\n", "the name 'a' is used twice"),
        (BASE + "[router]\nmax_attempts = 0\n", "router.max_attempts: Expected `int` >= 1"),
        ('overload = "drop"\n' + BASE, "overload: Invalid enum value 'drop'"),
    ],
)
def test_scenario_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse(text, source="my.toml")
    assert str(caught.value).startswith("my.toml: ")
    assert message in str(caught.value)


def test_an_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope' \(built-in: .*seed-failure.*steady"):
        builtin("nope")
    with pytest.raises(ScenarioError, match="unknown scenario"):
        builtin("../seed-failure")
