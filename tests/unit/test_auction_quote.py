"""The provider's default quote (`local_quote`) and the auction settings, without relays or a database."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.federation import Bid, Rfb
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai.service.config import ConfigError, Env
from fedai_router.config import RouterSettings
from fedai_router.federation.bid_quote import local_quote
from fedai_router.index import NodeIndex
from fedai_router.pricing import Fees

REQUESTER = Keys.generate()


def provider(*, nodes: list[tuple[int, int, float]], backpressure: str = "NORMAL", **settings: Any) -> Any:
    """A stand-in router with nodes of (input msat/1k, output msat/1k, latency estimate ms), capacity 2 each."""
    index = NodeIndex()
    for input_msat, output_msat, latency in nodes:
        descriptor = NodeDescriptor(
            endpoint="http://127.0.0.1:9",
            models=[
                ModelInfo(
                    id="m",
                    context_window=4096,
                    max_tokens=1024,
                    latency_estimate_ms=latency,
                    pricing=Pricing(input_msat=input_msat, output_msat=output_msat),
                )
            ],
            capacity=Capacity(max_concurrent=2),
        )
        index.upsert(Keys.generate().pubkey, descriptor, verified=True, heartbeat=True, seen=time.time())
    config = RouterSettings(keys=Keys.generate(), **settings)
    fees = Fees(config.fee_base_msat, config.fee_ppm)
    return (config, fees, index.tables, config.policy, lambda: backpressure)  # local_quote's collaborators


def rfb(**over: Any) -> tuple[Any, Rfb]:
    fields: dict[str, Any] = dict(
        job_type="text-generation",
        model="m",
        privacy=1,
        input_tokens=100,
        max_tokens=200,
        max_price_msat=10_000,
        job_hash="a" * 64,
        deadline_ms=int(time.time() * 1000) + 60_000,
    )
    fields.update(over)
    job = Rfb(**fields)
    return seal(REQUESTER, Kind.RFB, job, expiration=int(time.time()) + 30), job


def test_bids_the_cheapest_node_for_the_whole_job_plus_the_fee() -> None:
    svc = provider(nodes=[(1000, 2000, 300.0), (500, 1000, 900.0)], fee_base_msat=5, fee_ppm=100_000)
    event, job = rfb()
    bid = local_quote(*svc)(event, job)
    assert isinstance(bid, Bid)
    # cheapest node: 100 × 0.5 + 200 × 1.0 = 250 msat, fee 5 + 10% = 30
    assert (bid.rfb, bid.price_msat, bid.eta_ms) == (event.id, 280, 900)
    assert len(bid.capacity_token) == 32 and bid.capacity_token != local_quote(*svc)(event, job).capacity_token  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("over", "svc_over"),
    [
        ({"privacy": 3}, {}),  # PL3 never leaves a router
        ({"privacy": 2}, {"fed_max_privacy": 1}),  # above what this router accepts
        ({"privacy": 1}, {"fed_privacy_by_job": {"text-generation": 0}}),  # above the job type's level
        ({}, {"backpressure": "SATURATED"}),
        ({"max_price_msat": 249}, {}),  # under the cheapest node
        ({"model": "other"}, {}),
        ({"max_tokens": 2000}, {}),  # larger than the nodes take
        ({"deadline_ms": int(time.time() * 1000) + 100}, {}),  # the node's latency overshoots the deadline
    ],
)
def test_no_bid(over: dict[str, Any], svc_over: dict[str, Any]) -> None:
    settings = {k: v for k, v in svc_over.items() if k != "backpressure"}  # the parameter is shared: don't mutate it
    svc = provider(nodes=[(500, 1000, 900.0)], backpressure=svc_over.get("backpressure", "NORMAL"), **settings)
    assert local_quote(*svc)(*rfb(**over)) is None


def test_no_bid_once_open_bids_hold_every_free_slot() -> None:
    svc = provider(nodes=[(500, 1000, 10.0), (500, 1000, 10.0)])  # 2 nodes × 2 slots
    held = {"m": 3}
    quote = local_quote(*svc, held=lambda model: held.get(model, 0))
    assert quote(*rfb()) is not None
    held["m"] = 4
    assert quote(*rfb()) is None


def test_auction_settings_from_the_environment() -> None:
    base = {"ROUTER_PRIVATE_KEY": Keys.generate().secret_hex}
    settings = RouterSettings.from_env(
        Env(
            {
                **base,
                "ROUTER_AUCTION_TTL_MS": "800",
                "ROUTER_POSTED_TTL_MS": "200",
                "ROUTER_REAUCTION_COOLDOWN_MS": "0",
                "ROUTER_PEER_BREAKER_FAILURES": "5",
                "ROUTER_PEER_BREAKER_COOLDOWN_S": "10",
                "ROUTER_AUCTION_W_PRICE": "2",
                "ROUTER_AUCTION_W_ETA": "0.5",
                "ROUTER_AUCTION_W_REPUTATION": "0",
                "ROUTER_BIDDING": "false",
            }
        )
    )
    assert (settings.auction_ttl_ms, settings.posted_ttl_ms, settings.reauction_cooldown_ms) == (800, 200, 0)
    assert (settings.peer_breaker_failures, settings.peer_breaker_cooldown_s, settings.bidding) == (5, 10, False)
    assert (settings.auction_w_price, settings.auction_w_eta, settings.auction_w_reputation) == (2.0, 0.5, 0.0)
    defaults = RouterSettings.from_env(Env(base))
    assert (defaults.auction_ttl_ms, defaults.reauction_cooldown_ms, defaults.bidding) == (1500, 5000, True)
    for bad in ({"ROUTER_AUCTION_TTL_MS": "0"}, {"ROUTER_PEER_BREAKER_FAILURES": "0"}, {"ROUTER_AUCTION_W_ETA": "-1"}):
        with pytest.raises(ConfigError):
            RouterSettings.from_env(Env({**base, **bad}))
