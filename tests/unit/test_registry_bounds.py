"""The bounded registry's pure parts: per-descriptor caps, the index's node and name budget (with the verified
reserve), freed tables, compaction, pruning by age, the registration rate gate, and the settings that set them."""

from __future__ import annotations

import numpy as np
import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai.service.config import ConfigError, Env
from fedai_router.admission import RegistrationGate, check_descriptor, check_size
from fedai_router.config import RegistryLimits, RouterSettings
from fedai_router.index import Budget, NodeIndex, RegistryFull
from fedai_router.scheduler import Demand, Policy, rank

NOW = 1_800_000_000.0
LIMITS = RegistryLimits(max_models=3, max_aliases=2, max_job_types=2, max_name_chars=16)


def model(name: str, aliases: list[str] | None = None, job_types: list[str] | None = None) -> ModelInfo:
    pricing = Pricing(input_msat=1, output_msat=1)
    jobs = job_types or ["text-generation"]
    return ModelInfo(
        id=name, context_window=4096, max_tokens=512, pricing=pricing, aliases=aliases or [], job_types=jobs
    )


def descriptor(*models: ModelInfo, region: str = "", version: str = "") -> NodeDescriptor:
    capacity = Capacity(max_concurrent=2)
    return NodeDescriptor(
        endpoint="http://n.example", models=list(models), capacity=capacity, region=region, software_version=version
    )


def key(i: int) -> str:
    return f"{i:064x}"


# --- per-descriptor caps ------------------------------------------------------------------------------------


def test_a_descriptor_at_every_cap_is_accepted() -> None:
    at_cap = [model(f"m{i}".ljust(16, "x"), aliases=["a" * 16, "b" * 16], job_types=["t1", "t2"]) for i in range(3)]
    check_descriptor(descriptor(*at_cap, region="r" * 16, version="v" * 16), LIMITS)


@pytest.mark.parametrize(
    ("desc", "variable"),
    [
        (descriptor(*(model(f"m{i}") for i in range(4))), "ROUTER_NODE_MAX_MODELS"),
        (descriptor(model("m", aliases=["a", "b", "c"])), "ROUTER_NODE_MAX_ALIASES"),
        (descriptor(model("m", job_types=["t1", "t2", "t3"])), "ROUTER_NODE_MAX_JOB_TYPES"),
        (descriptor(model("m" * 17)), "ROUTER_MODEL_NAME_MAX_CHARS"),
        (descriptor(model("m", aliases=["a" * 17])), "ROUTER_MODEL_NAME_MAX_CHARS"),
        (descriptor(model("m", job_types=["t" * 17])), "ROUTER_MODEL_NAME_MAX_CHARS"),
        (descriptor(model("m"), region="r" * 17), "ROUTER_MODEL_NAME_MAX_CHARS"),
        (descriptor(model("m"), version="v" * 17), "ROUTER_MODEL_NAME_MAX_CHARS"),
    ],
)
def test_a_descriptor_over_a_cap_is_refused_naming_the_variable(desc: NodeDescriptor, variable: str) -> None:
    with pytest.raises(FedaiError) as err:
        check_descriptor(desc, LIMITS)
    assert err.value.code == "invalid_event" and err.value.status == 400
    assert variable in err.value.message


def test_a_descriptor_over_the_size_bound_is_too_large() -> None:
    check_size(LIMITS.max_descriptor_bytes, LIMITS)
    with pytest.raises(FedaiError) as err:
        check_size(LIMITS.max_descriptor_bytes + 1, LIMITS)
    assert err.value.code == "too_large" and "ROUTER_NODE_MAX_DESCRIPTOR_BYTES" in err.value.message


# --- the index's budget -------------------------------------------------------------------------------------


def test_unverified_nodes_may_not_use_the_verified_reserve_of_model_names() -> None:
    index = NodeIndex(Budget(max_nodes=100, max_names=8, verified_reserve=0.25))  # unverified: 6 names
    for i in range(3):
        desc = descriptor(model(f"u{i}", aliases=[f"u{i}-alias"]))
        index.upsert(key(i), desc, verified=False, heartbeat=False, seen=NOW)
    assert len(index.tables) == 6
    with pytest.raises(RegistryFull) as err:
        index.upsert(key(9), descriptor(model("late")), verified=False, heartbeat=False, seen=NOW)
    assert err.value.code == "capacity_exceeded" and err.value.retry_after_ms
    assert "ROUTER_MAX_MODEL_NAMES" in err.value.message and err.value.reason == "model_names"
    assert key(9) not in index.nodes and "late" not in index.tables  # nothing half-added
    # a verified node may use the reserve, up to the whole budget
    index.upsert(key(10), descriptor(model("v1", aliases=["v1-alias"])), verified=True, heartbeat=True, seen=NOW)
    assert len(index.tables) == 8
    with pytest.raises(RegistryFull):
        index.upsert(key(11), descriptor(model("v2")), verified=True, heartbeat=True, seen=NOW)
    # names that already exist cost nothing: another node serving them is welcome
    index.upsert(key(12), descriptor(model("u0")), verified=False, heartbeat=False, seen=NOW)
    assert len(index.tables["u0"]) == 2


def test_the_node_budget_keeps_a_reserve_for_verified_nodes() -> None:
    index = NodeIndex(Budget(max_nodes=4, max_names=100, verified_reserve=0.5))  # unverified: 2 nodes
    for i in range(2):
        index.upsert(key(i), descriptor(model("m")), verified=False, heartbeat=False, seen=NOW)
    with pytest.raises(RegistryFull) as err:
        index.upsert(key(2), descriptor(model("m")), verified=False, heartbeat=False, seen=NOW)
    assert err.value.reason == "nodes" and "ROUTER_MAX_NODES" in err.value.message
    for i in range(2, 4):
        index.upsert(key(i), descriptor(model("m")), verified=True, heartbeat=True, seen=NOW)
    with pytest.raises(RegistryFull):
        index.upsert(key(4), descriptor(model("m")), verified=True, heartbeat=True, seen=NOW)
    assert len(index.nodes) == 4 == len(index.tables["m"])


def test_a_known_node_keeps_heartbeating_when_the_budget_is_full() -> None:
    index = NodeIndex(Budget(max_nodes=1, max_names=1))
    index.upsert(key(1), descriptor(model("m")), verified=True, heartbeat=True, seen=NOW)
    node = index.upsert(key(1), descriptor(model("m")), verified=True, heartbeat=True, seen=NOW + 5)
    assert node.last_seen == NOW + 5
    assert not index.changes_names(key(1), descriptor(model("m")))
    assert index.changes_names(key(1), descriptor(model("other")))
    with pytest.raises(RegistryFull):  # but it cannot add a name beyond the budget
        index.upsert(key(1), descriptor(model("m"), model("n")), verified=True, heartbeat=True, seen=NOW + 10)
    assert set(index.nodes[key(1)].models) == {"m"}


# --- freeing tables -----------------------------------------------------------------------------------------


def test_a_table_is_freed_with_its_last_row_and_the_scheduler_sees_no_such_model() -> None:
    index = NodeIndex()
    desc = descriptor(model("shared"), model("only-a", aliases=["alias-a"]))
    a = index.upsert(key(1), desc, verified=True, heartbeat=True, seen=NOW)
    index.upsert(key(2), descriptor(model("shared")), verified=True, heartbeat=True, seen=NOW)
    assert set(index.tables) == {"shared", "only-a", "alias-a"}
    index.begin(a)  # a call to `a` is in flight while it goes away
    index.remove(key(1))
    assert set(index.tables) == {"shared"} and len(index.tables["shared"]) == 1
    index.end(a)  # the call ends after the node was removed: nothing to update, no error
    index.succeeded(a, 12.0)
    assert a.in_flight == 0
    demand = Demand(model="only-a", input_tokens=1, max_tokens=1)
    with pytest.raises(FedaiError) as err:
        rank(index.tables.get("only-a"), demand, now=NOW, policy=Policy())
    assert err.value.code == "unknown_model"


def test_a_node_dropping_a_name_frees_that_table() -> None:
    index = NodeIndex()
    index.upsert(key(1), descriptor(model("old", aliases=["old-alias"])), verified=True, heartbeat=True, seen=NOW)
    index.upsert(key(1), descriptor(model("new")), verified=True, heartbeat=True, seen=NOW + 1)
    assert set(index.tables) == {"new"}


def test_prune_forgets_nodes_last_seen_before_the_cutoff_and_their_tables() -> None:
    index = NodeIndex()
    index.upsert(key(1), descriptor(model("stale-only")), verified=True, heartbeat=True, seen=NOW - 100)
    index.upsert(key(2), descriptor(model("live")), verified=False, heartbeat=False, seen=NOW)
    assert index.prune(NOW - 50) == [key(1)]
    assert set(index.nodes) == {key(2)} and set(index.tables) == {"live"}


def priced(i: int) -> NodeDescriptor:
    pricing = Pricing(input_msat=1 + i % 17, output_msat=1 + i % 5)
    info = ModelInfo(id="m", context_window=4096, max_tokens=512, pricing=pricing)
    return NodeDescriptor(endpoint="http://n.example", models=[info], capacity=Capacity(max_concurrent=2))


def test_a_mostly_empty_table_is_compacted_and_ranks_the_same() -> None:
    index = NodeIndex()
    for i in range(200):
        index.upsert(key(i), priced(i), verified=True, heartbeat=True, seen=NOW)
    table = index.tables["m"]
    grown = len(table.alive)
    for i in range(200):
        if i % 10:
            index.remove(key(i))
    assert len(table) == 20 and table.n <= 64 and len(table.alive) <= 128 < grown  # packed, columns shrunk
    assert np.count_nonzero(table.alive[: table.n]) == 20
    for pubkey, row in table.row_of.items():  # every row still belongs to its node
        node = table.nodes[row]
        assert node is not None and node.pubkey == pubkey
    fresh = NodeIndex()  # the same 20 nodes, never removed or compacted
    for i in range(0, 200, 10):
        fresh.upsert(key(i), priced(i), verified=True, heartbeat=True, seen=NOW)
    demand = Demand(model="m", input_tokens=10, max_tokens=10)
    ranked = [c.node.pubkey for c in rank(table, demand, now=NOW, policy=Policy(), k=20)]
    expected = [c.node.pubkey for c in rank(fresh.tables["m"], demand, now=NOW, policy=Policy(), k=20)]
    assert ranked == expected and len(ranked) == 20


# --- the registration rate gate -----------------------------------------------------------------------------


def test_the_gate_limits_new_registrations_per_address_per_key_and_per_relay() -> None:
    gate = RegistrationGate(RegistryLimits(register_per_address=3, register_per_key=2, announce_per_relay=2))
    for i in range(3):
        gate.check(key(i), address="192.0.2.1")
    with pytest.raises(FedaiError) as err:
        gate.check(key(99), address="192.0.2.1")
    assert err.value.code == "rate_limited" and err.value.retry_after_ms and err.value.retry_after_ms > 0
    assert "ROUTER_REGISTER_PER_ADDRESS" in err.value.message
    gate.check(key(100), address="192.0.2.2")  # another address has its own budget
    gate.check(key(100), address="192.0.2.3")
    with pytest.raises(FedaiError) as err:
        gate.check(key(100), address="192.0.2.4")  # but one key re-registering is limited on its own
    assert "ROUTER_REGISTER_PER_KEY" in err.value.message
    gate.check(key(200), relay="wss://a")
    gate.check(key(201), relay="wss://a")
    with pytest.raises(FedaiError) as err:
        gate.check(key(202), relay="wss://a")
    assert "ROUTER_ANNOUNCE_NEW_PER_RELAY" in err.value.message
    gate.check(key(203), relay="wss://b")


# --- settings -----------------------------------------------------------------------------------------------


def settings(**env: str) -> RouterSettings:
    return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))


def test_registry_and_retention_variables_reach_the_settings() -> None:
    env = {
        "ROUTER_NODE_MAX_MODELS": "4",
        "ROUTER_NODE_MAX_ALIASES": "0",
        "ROUTER_MAX_MODEL_NAMES": "50",
        "ROUTER_MAX_NODES": "20",
        "ROUTER_REGISTRY_VERIFIED_RESERVE": "0.5",
        "ROUTER_REGISTER_PER_ADDRESS": "7",
        "ROUTER_NODE_RETENTION_S": "3600",
        "ROUTER_QUOTE_RETENTION_S": "0",
        "ROUTER_PRUNE_BATCH": "10",
    }
    s = settings(**env)
    limits, retention = s.registry_limits, s.retention
    assert (limits.max_models, limits.max_aliases, limits.max_names, limits.max_nodes) == (4, 0, 50, 20)
    assert (limits.verified_reserve, limits.register_per_address) == (0.5, 7)
    assert (retention.nodes_s, retention.quotes_s, retention.batch) == (3600, 0, 10)
    defaults = settings()
    assert defaults.registry_limits == RegistryLimits() and defaults.retention.nodes_s == 86_400


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ROUTER_NODE_MAX_MODELS": "257"}, "ROUTER_NODE_MAX_MODELS"),
        ({"ROUTER_NODE_MAX_ALIASES": "33"}, "ROUTER_NODE_MAX_ALIASES"),
        ({"ROUTER_MODEL_NAME_MAX_CHARS": "201"}, "ROUTER_MODEL_NAME_MAX_CHARS"),
        ({"ROUTER_MAX_MODEL_NAMES": "0"}, "ROUTER_MAX_MODEL_NAMES"),
        ({"ROUTER_REGISTRY_VERIFIED_RESERVE": "0.95"}, "ROUTER_REGISTRY_VERIFIED_RESERVE"),
        ({"ROUTER_REGISTER_PER_KEY": "0"}, "ROUTER_REGISTER_PER_KEY"),
        ({"ROUTER_PRUNE_BATCH": "0"}, "ROUTER_PRUNE_BATCH"),
        ({"ROUTER_NODE_RETENTION_S": "600"}, "ROUTER_NODE_RETENTION_S"),  # shorter than ROUTER_ANNOUNCE_TTL_S
    ],
)
def test_unworkable_bounds_fail_at_start_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(**env)
