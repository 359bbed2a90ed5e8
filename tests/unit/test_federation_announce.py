"""The announcer's rules (backpressure, surge, p95, prices) and what it publishes when, against a fake pool."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from fedai import __version__
from fedai.nostr import PublishResult
from fedai.protocol.event import Event, verify_event
from fedai.protocol.federation import RouterCaps, RouterPrice, RouterStatus
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing, decode_payload
from fedai_router.config import RouterSettings
from fedai_router.federation.announce import (
    EXPIRY_INTERVALS,
    SNAPSHOTS_PER_WINDOW,
    Announcer,
    FleetLoad,
    LatencyWindow,
    classify,
    fleet_offer,
    measure,
    price_sheet,
    quantile_ms,
    surge_for,
    with_fee,
)
from fedai_router.index import NodeIndex
from fedai_router.metrics import RouterMetrics


def descriptor(
    model: str = "m",
    *,
    inp: int = 1000,
    out: int = 2000,
    cap: int = 4,
    in_flight: int = 0,
    job_types: list[str] | None = None,
    aliases: list[str] | None = None,
) -> NodeDescriptor:
    info = ModelInfo(
        id=model,
        context_window=4096,
        max_tokens=512,
        pricing=Pricing(input_msat=inp, output_msat=out),
        latency_estimate_ms=40.0,
        aliases=aliases or [],
    )
    if job_types is not None:
        info.job_types = job_types
    return NodeDescriptor(
        endpoint="http://10.0.0.1:1", models=[info], capacity=Capacity(max_concurrent=cap, in_flight=in_flight)
    )


def always(_: Any) -> bool:
    return True


# -- rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("u", "previous", "expected"),
    [
        (0.0, "NORMAL", "NORMAL"),
        (0.69, "NORMAL", "NORMAL"),
        (0.7, "NORMAL", "BUSY"),
        (0.95, "NORMAL", "SATURATED"),
        (1.5, "BUSY", "SATURATED"),
        (0.93, "SATURATED", "SATURATED"),  # within the hysteresis: stays
        (0.89, "SATURATED", "BUSY"),  # clearly below: goes down one level
        (0.67, "BUSY", "BUSY"),
        (0.64, "BUSY", "NORMAL"),
        (0.1, "SATURATED", "NORMAL"),  # far below: straight to NORMAL
    ],
)
def test_backpressure_thresholds_with_hysteresis(u: float, previous: str, expected: str) -> None:
    assert classify(u, previous, 0.7, 0.95) == expected  # type: ignore[arg-type]


def test_surge_rises_linearly_above_the_start_in_steps() -> None:
    assert surge_for(0.0, 0.5, 2.0) == 1.0
    assert surge_for(0.5, 0.5, 2.0) == 1.0
    assert surge_for(0.75, 0.5, 2.0) == 1.5
    assert surge_for(0.8, 0.5, 2.0) == 1.5  # 1.6 rounds down to a 0.25 step
    assert surge_for(1.0, 0.5, 2.0) == 2.0
    assert surge_for(3.0, 0.5, 2.0) == 2.0  # capped
    assert surge_for(1.0, 0.5, 1.0) == 1.0  # surge off
    assert surge_for(1.0, 1.0, 3.0) == 1.0


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 100 calls: 90 under 10 ms, 10 between 10 and 20 ms -> p95 halfway through the second bucket
    assert quantile_ms([(0.01, 90), (0.02, 100), (float("inf"), 100)], 0.95) == pytest.approx(15.0)
    assert quantile_ms([(0.01, 0), (float("inf"), 0)], 0.95) is None
    assert quantile_ms([(0.01, 0), (float("inf"), 10)], 0.95) == 10.0  # beyond the last bound: that bound


def test_latency_window_forgets_calls_older_than_the_window() -> None:
    hist = Histogram("h", "h", buckets=(0.01, 0.1, 1.0), registry=CollectorRegistry())
    window = LatencyWindow(hist, window_s=10)
    window.sample(0)
    assert window.p95_ms() is None
    for _ in range(20):
        hist.observe(0.5)
    window.sample(1)
    assert 100 < (window.p95_ms() or 0) <= 1000
    for _ in range(100):
        hist.observe(0.005)
    window.sample(12)  # the slow calls happened before the window now starts at t=2..12
    window.sample(13)
    p95 = window.p95_ms()
    assert p95 is not None and p95 <= 10


def test_latency_window_keeps_a_bounded_number_of_snapshots() -> None:
    hist = Histogram("h", "h", buckets=(0.01, 0.1, 1.0), registry=CollectorRegistry())
    window = LatencyWindow(hist, window_s=300)
    for t in range(1_000):  # sampled every second, as the announcer does; slow calls for the first 500 s
        hist.observe(0.5 if t < 500 else 0.005)
        window.sample(float(t))
        assert len(window) <= SNAPSHOTS_PER_WINDOW + 2  # not one per second of the window
        if t == 600:  # the window holds 200 s of slow calls and 100 s of fast ones
            assert (window.p95_ms() or 0) > 100
    p95 = window.p95_ms()  # only fast calls in the last 300 s
    assert p95 is not None and p95 <= 10


def test_fee_rounds_up() -> None:
    assert with_fee(1000, 0) == 1000
    assert with_fee(1000, 10_000) == 1010
    assert with_fee(1, 1) == 2


def test_measure_counts_fresh_capacity_and_load() -> None:
    index = NodeIndex()
    busy = index.upsert("a" * 64, descriptor(cap=4, in_flight=3), verified=True, heartbeat=True, seen=100)
    index.upsert("b" * 64, descriptor(cap=4), verified=True, heartbeat=True, seen=100)
    stale = index.upsert("c" * 64, descriptor(cap=100, in_flight=100), verified=True, heartbeat=True, seen=0)
    index.begin(busy)
    load = measure(index.nodes.values(), lambda n: n is not stale, now=100)
    assert (load.nodes, load.capacity, load.used, load.in_flight) == (2, 8, 4, 1)
    assert load.utilisation == 0.5 and load.queue_depth == 0
    assert FleetLoad(0, 0, 0, 0).utilisation == 1.0  # no capacity at all: nothing can be served
    assert FleetLoad(1, 2, 5, 5).queue_depth == 3


def test_offer_and_price_sheet_take_the_cheapest_fresh_node_plus_fee() -> None:
    index = NodeIndex()
    index.upsert("a" * 64, descriptor("m", inp=500, out=900), verified=True, heartbeat=True, seen=1)
    index.upsert("b" * 64, descriptor("m", inp=400, out=800, aliases=["alias"]), verified=True, heartbeat=True, seen=1)
    stale = index.upsert("c" * 64, descriptor("m", inp=1, out=1), verified=True, heartbeat=True, seen=1)
    index.upsert(
        "d" * 64, descriptor("e", inp=7, out=7, job_types=["embedding"]), verified=True, heartbeat=True, seen=1
    )
    offer = fleet_offer(index.tables, lambda n: n is not stale)
    assert offer.models == ["alias", "e", "m"]
    assert offer.job_types == ["embedding", "text-generation"]
    assert offer.max_tokens == 512
    sheet = price_sheet("text-generation", offer, fee_ppm=100_000, fee_base_msat=5, surge=1.5, p95_ms=12.34)
    assert [(m.model, m.input_msat, m.output_msat) for m in sheet.models] == [("alias", 440, 880), ("m", 440, 880)]
    assert (sheet.base_msat, sheet.surge, sheet.sla.p95_latency_ms) == (5, 1.5, 12.3)
    assert [m.model for m in price_sheet("embedding", offer, fee_ppm=0, fee_base_msat=0, surge=1, p95_ms=0).models] == [
        "e"
    ]


# -- the announcer against a fake pool ----------------------------------------------------------------


class FakePool:
    """Records what the announcer publishes; every publish is accepted unless `down`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stats = {"reconnects": 0}
        self.connected = 1
        self.down = False

    async def publish(self, event: Event, timeout: float = 5.0) -> list[PublishResult]:  # noqa: ASYNC109
        if self.down:
            return [PublishResult("ws://fake", False, "not connected")]
        self.events.append(event)
        return [PublishResult("ws://fake", True, "")]

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


@dataclass
class Stand:
    """An announcer wired as the router wires it, over an index of nodes and a fake relay pool."""

    announcer: Announcer
    settings: RouterSettings

    @property
    def pubkey(self) -> str:
        return self.settings.keys.pubkey

    @property
    def backpressure(self) -> str:
        return self.announcer.backpressure


def service(**overrides: Any) -> tuple[Stand, NodeIndex, FakePool]:
    settings = RouterSettings(keys=Keys.generate(), public_url="https://router.example", **overrides)
    index = NodeIndex()
    pool = FakePool()
    metrics = RouterMetrics()
    announcer = Announcer(
        keys=settings.keys,
        settings=settings,
        version=__version__,
        nodes=index.nodes,
        tables=index.tables,
        policy=settings.policy,
        latency=metrics.node_latency,
        metrics=metrics.registry,
        relays=pool,  # type: ignore[arg-type]
    )
    return Stand(announcer, settings), index, pool


def by_kind(events: list[Event]) -> dict[tuple[int, str | None], Event]:
    return {(e.kind, e.tag("d")): e for e in events}


async def test_first_announcement_is_caps_price_and_status_with_d_tags_and_expiration() -> None:
    svc, index, pool = service(fee_ppm=0, announce_s=60)
    index.upsert("a" * 64, descriptor("m", cap=2), verified=True, heartbeat=True, seen=time.time())
    now = time.time()
    svc.announcer.update(now)
    assert await svc.announcer.announce(now) == 3
    events = by_kind(pool.take())
    assert set(events) == {(31020, "caps"), (31021, "text-generation"), (31022, "status")}
    for event in events.values():
        verify_event(event)
        assert event.pubkey == svc.pubkey
        assert int(event.tag("expiration") or 0) == event.created_at + EXPIRY_INTERVALS * 60
    caps = decode_payload(events[(31020, "caps")].content, RouterCaps)
    assert caps.endpoint == "https://router.example" and caps.models == ["m"] and caps.settlement == ["none"]
    assert caps.max_privacy == svc.settings.fed_max_privacy
    assert caps.limits.max_request_bytes == svc.settings.max_request_bytes
    price = decode_payload(events[(31021, "text-generation")].content, RouterPrice)
    assert [(p.model, p.input_msat, p.output_msat) for p in price.models] == [("m", 1000, 2000)]
    status = decode_payload(events[(31022, "status")].content, RouterStatus)
    assert (status.backpressure, status.nodes, status.active_jobs) == ("NORMAL", 1, 0)
    # nothing changed: nothing is published until the interval
    assert await svc.announcer.announce(now + 1) == 0


async def test_price_and_backpressure_changes_are_republished_alone_and_newer() -> None:
    svc, index, pool = service(busy_at=0.5, saturated_at=0.9)
    key = "a" * 64
    index.upsert(key, descriptor("m", cap=2), verified=True, heartbeat=True, seen=time.time())
    now = time.time()
    svc.announcer.update(now)
    await svc.announcer.announce(now)
    first = by_kind(pool.take())

    index.upsert(key, descriptor("m", inp=1500, cap=2), verified=True, heartbeat=True, seen=time.time())
    svc.announcer.update(now)
    assert await svc.announcer.announce(now) == 1
    (price_event,) = pool.take()
    assert price_event.kind == Kind.ROUTER_PRICE
    assert price_event.created_at > first[(31021, "text-generation")].created_at  # replaces it on relays
    assert decode_payload(price_event.content, RouterPrice).models[0].input_msat == 1500

    node = index.nodes[key]
    index.begin(node)
    index.begin(node)  # 2 of 2 in use
    svc.announcer.update(now)
    assert svc.backpressure == "SATURATED"
    published = by_kind(pool.take() if await svc.announcer.announce(now) else [])
    status = decode_payload(published[(31022, "status")].content, RouterStatus)
    assert (status.backpressure, status.active_jobs) == ("SATURATED", 2)
    surge = decode_payload(published[(31021, "text-generation")].content, RouterPrice).surge
    assert surge == 2.0  # full use: the surge went up too, so the price sheet was re-announced

    index.end(node)
    index.end(node)
    svc.announcer.update(now)
    assert svc.backpressure == "NORMAL"


async def test_failed_publish_is_retried_and_interval_republishes_everything() -> None:
    svc, index, pool = service(announce_s=1)
    index.upsert("a" * 64, descriptor("m"), verified=True, heartbeat=True, seen=time.time())
    now = time.time()
    svc.announcer.update(now)
    pool.down = True
    await svc.announcer.announce(now)
    assert pool.take() == [] and svc.announcer.published == {}
    pool.down = False
    assert await svc.announcer.announce(now) == 3  # retried on the next check
    pool.take()
    pool.stats["reconnects"] = 1  # a relay came back (possibly empty): publish everything again
    assert await svc.announcer.announce(now) == 3


async def test_a_router_without_nodes_is_saturated_and_lists_nothing() -> None:
    svc, _, pool = service()
    now = time.time()
    svc.announcer.update(now)
    assert svc.backpressure == "SATURATED"
    await svc.announcer.announce(now)
    events = by_kind(pool.take())
    assert decode_payload(events[(31020, "caps")].content, RouterCaps).models == []
    assert (31022, "status") in events and all(kind != 31021 for kind, _ in events)
