"""What the router asks its scheduler for, from a client's request (`fedai_router.planning.demand_for`)."""

from __future__ import annotations

import pytest

from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import InferenceRequest
from fedai_router.planning import demand_for

A, B = "a" * 64, "b" * 64


def test_every_binding_of_the_request_reaches_the_scheduler() -> None:
    request = InferenceRequest(
        model="m", prompt="x" * 40, max_tokens=7, job_type="summarize", nodes=[A], exclude_nodes=[B]
    )
    demand = demand_for(request, 123)
    assert (demand.model, demand.input_tokens, demand.max_tokens) == ("m", 10, 7)
    assert (demand.job_type, demand.max_price_msat) == ("summarize", 123)
    assert (demand.pin, demand.exclude) == (frozenset({A}), frozenset({B}))


def test_a_zero_price_cap_is_kept_as_zero() -> None:
    assert demand_for(InferenceRequest(model="m", prompt="p", max_tokens=1), 0).max_price_msat == 0


def test_a_node_both_pinned_and_excluded_is_refused() -> None:
    with pytest.raises(FedaiError) as err:
        demand_for(InferenceRequest(model="m", prompt="p", max_tokens=1, nodes=[A], exclude_nodes=[A]), None)
    assert err.value.code == "invalid_request"
