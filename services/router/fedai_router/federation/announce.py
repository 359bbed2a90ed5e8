"""This router's announcements on its relays: `router.caps`, one `router.price` per job type, `router.status`.

Every second the announcer measures the fleet (fresh nodes, capacity in use), sets the backpressure state
and, with relays configured, re-publishes what changed: caps when models, job types or limits change, a price
sheet when its prices or surge change, the status when backpressure changes; everything every
`ROUTER_ANNOUNCE_S` and after a relay reconnects. Each event is addressable (`d` tag) and carries a NIP-40
`expiration` of `EXPIRY_INTERVALS` intervals, so a router that stops announcing fades from its peers' view.

Rules (docs/federation.md, "Announcements"):
- utilisation u = calls outstanding at the fresh, not cooling-down nodes (ours plus others' as last reported)
  / their capacity (1.0 when there is none).
- backpressure: SATURATED when u ≥ `ROUTER_SATURATED_AT`, BUSY when u ≥ `ROUTER_BUSY_AT`, else NORMAL; a state is
  left downwards only once u is `HYSTERESIS` below its threshold, so load wobbling at a threshold does not
  re-announce every second.
- surge: 1.0 up to u = `ROUTER_SURGE_START`, then linear up to `ROUTER_SURGE_MAX` at u = 1, rounded down to
  steps of `SURGE_STEP`.
- price per model and job type: the cheapest fresh node's per-1k price, plus `ROUTER_FEE_PPM` (rounded up);
  `base_msat` = `ROUTER_FEE_BASE_MSAT` per job.
- SLA p95: node calls of the last `P95_WINDOW_S` (the `fedai_router_node_seconds` histogram, interpolated in
  its buckets); without any, the highest latency estimate of the fresh nodes' models.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from fedai.nostr import RelayPool
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import (
    CAPS_D,
    STATUS_D,
    Backpressure,
    ModelPrice,
    RouterCaps,
    RouterLimits,
    RouterPrice,
    RouterStatus,
    Sla,
)
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Payload, Pricing
from fedai_router.config import RouterSettings
from fedai_router.federation.settlement import settlement_methods
from fedai_router.node_state import NodeState
from fedai_router.pricing import Fees
from fedai_router.scheduler import ModelTable, Policy

log = logging.getLogger("fedai.router.announce")

CHECK_INTERVAL_S = 1.0
EXPIRY_INTERVALS = 3
HYSTERESIS = 0.05
SURGE_STEP = 0.25
P95_WINDOW_S = 300.0
SNAPSHOTS_PER_WINDOW = 30  # histogram snapshots the p95 window keeps
PUBLISH_TIMEOUT_S = 5.0
MAX_LISTED = 1024  # models per caps or price sheet (the payload's bound)
LEVELS: tuple[Backpressure, ...] = ("NORMAL", "BUSY", "SATURATED")


# -- measuring --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetLoad:
    nodes: int  # fresh nodes
    capacity: int  # concurrent calls the fresh, not cooling-down nodes take
    used: int  # calls outstanding at those nodes: ours plus others' as last reported
    in_flight: int  # this router's calls outstanding, all nodes

    @property
    def utilisation(self) -> float:
        return self.used / self.capacity if self.capacity > 0 else 1.0

    @property
    def queue_depth(self) -> int:
        return max(0, self.used - self.capacity)


def measure(nodes: Iterable[NodeState], is_fresh: Callable[[NodeState], bool], now: float) -> FleetLoad:
    fresh = capacity = used = in_flight = 0
    for node in nodes:
        in_flight += node.in_flight
        if not is_fresh(node):
            continue
        fresh += 1
        if node.cooldown_until <= now:
            capacity += node.capacity
            used += node.load
    return FleetLoad(nodes=fresh, capacity=capacity, used=used, in_flight=in_flight)


def _level(utilisation: float, busy_at: float, saturated_at: float) -> int:
    return 2 if utilisation >= saturated_at else 1 if utilisation >= busy_at else 0


def classify(
    utilisation: float, previous: Backpressure, busy_at: float, saturated_at: float, hysteresis: float = HYSTERESIS
) -> Backpressure:
    """NORMAL / BUSY / SATURATED from the fraction of capacity in use; going down needs `hysteresis` of room."""
    level = _level(utilisation, busy_at, saturated_at)
    held = LEVELS.index(previous)
    if level < held:
        level = max(level, min(held, _level(utilisation + hysteresis, busy_at, saturated_at)))
    return LEVELS[level]


def surge_for(utilisation: float, start: float, maximum: float, step: float = SURGE_STEP) -> float:
    """1.0 up to `start`, then linear to `maximum` at full use, rounded down to `step`."""
    if maximum <= 1.0 or start >= 1.0 or utilisation <= start:
        return 1.0
    raw = 1.0 + (maximum - 1.0) * min(1.0, (utilisation - start) / (1.0 - start))
    return max(1.0, math.floor(raw / step + 1e-9) * step)


@dataclass(frozen=True, slots=True)
class Offer:
    """What the fresh nodes serve: names (ids and aliases), job types, the cheapest price per (job type, name)."""

    models: list[str]
    job_types: list[str]
    max_tokens: int
    cheapest: dict[str, dict[str, Pricing]]
    latency_estimate_ms: float


def fleet_offer(tables: Mapping[str, ModelTable], is_fresh: Callable[[NodeState], bool]) -> Offer:
    cheapest: dict[str, dict[str, Pricing]] = {}
    names: set[str] = set()
    max_tokens, latency = 1, 0.0
    for name, table in tables.items():
        for _, node, info in table.rows():
            if not is_fresh(node):
                continue
            names.add(name)
            max_tokens = max(max_tokens, info.max_tokens)
            latency = max(latency, info.latency_estimate_ms)
            pricing = info.pricing
            for job_type in info.job_types:
                best = cheapest.setdefault(job_type, {}).get(name)
                if best is None or (pricing.input_msat + pricing.output_msat, pricing.output_msat) < (
                    best.input_msat + best.output_msat,
                    best.output_msat,
                ):
                    cheapest[job_type][name] = pricing
    return Offer(sorted(names)[:MAX_LISTED], sorted(cheapest), max_tokens, cheapest, latency)


class LatencyWindow:
    """p95 of a latency histogram over the last `window_s`, from snapshots of its cumulative buckets.

    Sampled every second, but a snapshot is kept only every `window_s / SNAPSHOTS_PER_WINDOW` (the window's start
    moves in those steps): about 30 copies of the buckets are held, not one per second of the window."""

    def __init__(self, histogram: Histogram, window_s: float = P95_WINDOW_S) -> None:
        self._histogram = histogram
        self._window_s = window_s
        self._step = window_s / SNAPSHOTS_PER_WINDOW
        self._snapshots: deque[tuple[float, list[tuple[float, float]]]] = deque()
        self._latest: tuple[float, list[tuple[float, float]]] | None = None

    def _buckets(self) -> list[tuple[float, float]]:
        return [
            (float(s.labels["le"]), s.value)
            for metric in self._histogram.collect()
            for s in metric.samples
            if s.name.endswith("_bucket")
        ]

    def sample(self, now: float) -> None:
        self._latest = (now, self._buckets())
        if not self._snapshots or now - self._snapshots[-1][0] >= self._step:
            self._snapshots.append(self._latest)
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - self._window_s:
            self._snapshots.popleft()

    def p95_ms(self) -> float | None:
        if self._latest is None or self._snapshots[0][0] >= self._latest[0]:
            return None
        (_, old), (_, new) = self._snapshots[0], self._latest
        return quantile_ms([(le, n - o) for (le, n), (_, o) in zip(new, old, strict=True)], 0.95)

    def __len__(self) -> int:
        """Snapshots held."""
        return len(self._snapshots)


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile in ms of cumulative (upper bound s, count) buckets, linear inside a bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    target = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= target:
            if math.isinf(upper) or count == below:
                return lower * 1000
            return (lower + (upper - lower) * (target - below) / (count - below)) * 1000
        lower, below = upper, count
    return lower * 1000


# -- payloads ---------------------------------------------------------------------------------------------


def with_fee(msat_per_1k: int, fee_ppm: int) -> int:
    return math.ceil(msat_per_1k * (1_000_000 + fee_ppm) / 1_000_000)


def price_sheet(
    job_type: str, offer: Offer, *, fee_ppm: int, fee_base_msat: int, surge: float, p95_ms: float
) -> RouterPrice:
    models = [
        ModelPrice(model=name, input_msat=with_fee(p.input_msat, fee_ppm), output_msat=with_fee(p.output_msat, fee_ppm))
        for name, p in sorted(offer.cheapest.get(job_type, {}).items())
    ][:MAX_LISTED]
    return RouterPrice(
        job_type=job_type, base_msat=fee_base_msat, surge=surge, models=models, sla=Sla(p95_latency_ms=round(p95_ms, 1))
    )


def status_of(load: FleetLoad, backpressure: Backpressure, p95_ms: float) -> RouterStatus:
    return RouterStatus(
        backpressure=backpressure,
        queue_depth=load.queue_depth,
        active_jobs=load.in_flight,
        p95_latency_ms=round(p95_ms, 1),
        nodes=load.nodes,
    )


# -- the announcer ----------------------------------------------------------------------------------------

Key = tuple[int, str]  # (kind, d)


@dataclass(slots=True)
class _Wanted:
    key: Key
    payload: Payload
    compare: Any  # what must differ from the last published one for a re-publish between intervals


class Announcer:
    """Measures load every second (the router's backpressure) and keeps the router's announcements current on its
    relays (from `start`)."""

    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        version: str,
        nodes: Mapping[str, NodeState],
        tables: Mapping[str, ModelTable],
        policy: Policy,
        latency: Histogram,
        metrics: CollectorRegistry,
        fees: Fees | None = None,
        relays: RelayPool | None = None,
    ) -> None:
        self.keys = keys  # signs the announcements
        # the router fee in force: a change through the admin API changes the price sheets, re-published at the
        # next tick (a sheet is re-published whenever it differs from the one relays hold)
        self.fees = fees if fees is not None else Fees(settings.fee_base_msat, settings.fee_ppm)
        self.settings = settings  # ROUTER_ANNOUNCE_S, the backpressure and surge thresholds, fees, endpoint, limits
        self.version = version
        self.nodes = nodes  # the registry's nodes, by pubkey
        self.tables = tables  # the registry's scheduler tables, by model name
        self.policy = policy  # freshness
        self.relays = relays  # None: measure only
        self.backpressure: Backpressure = "NORMAL"
        self.load = FleetLoad(0, 0, 0, 0)
        self.surge = 1.0
        self.published: dict[Key, Any] = {}  # the `compare` part of what relays hold
        self._created: dict[Key, int] = {}
        self._last_full = -math.inf
        self._reconnects = 0
        self.latency = LatencyWindow(latency)  # the node calls' latency histogram
        self.counter = Counter(
            "fedai_router_announcements",
            "Announcements published, by kind and result (ok: a relay accepted it)",
            ["kind", "result"],
            registry=metrics,
        )

    def _is_fresh(self, now: float) -> Callable[[NodeState], bool]:
        return lambda node: self.policy.fresh(node.last_seen, node.heartbeat, now)

    def update(self, now: float) -> None:
        """Measure the fleet and move backpressure and surge (no I/O)."""
        settings = self.settings
        self.latency.sample(now)
        self.load = measure(self.nodes.values(), self._is_fresh(now), now)
        previous = self.backpressure
        u = self.load.utilisation
        self.backpressure = classify(u, previous, settings.busy_at, settings.saturated_at)
        self.surge = surge_for(u, settings.surge_start, settings.surge_max)
        if self.backpressure != previous:
            log.info(
                "backpressure changed", extra={"from": previous, "to": self.backpressure, "utilisation": round(u, 3)}
            )

    async def tick(self) -> None:
        now = time.time()
        self.update(now)
        if self.relays is not None:
            try:
                await self.announce(now)
            except Exception as exc:  # a failed announcement must not stop the load checks
                log.warning("announcing failed", extra={"error": type(exc).__name__}, exc_info=True)

    def wanted(self, now: float) -> list[_Wanted]:
        settings = self.settings
        offer = fleet_offer(self.tables, self._is_fresh(now))
        p95 = self.latency.p95_ms()
        p95_ms = p95 if p95 is not None else offer.latency_estimate_ms
        caps = RouterCaps(
            endpoint=settings.public_url or f"http://{settings.host}:{settings.port}",
            job_types=offer.job_types,
            models=offer.models,
            limits=RouterLimits(max_tokens=offer.max_tokens, max_request_bytes=settings.max_request_bytes),
            max_privacy=settings.fed_max_privacy,
            settlement=settlement_methods(wallet=settings.wallet is not None, required=settings.require_payment),
            software_version=self.version,
        )
        out = [_Wanted((int(Kind.ROUTER_CAPS), CAPS_D), caps, caps)]
        for job_type in offer.job_types:
            sheet = price_sheet(
                job_type,
                offer,
                fee_ppm=self.fees.ppm,
                fee_base_msat=self.fees.base_msat,
                surge=self.surge,
                p95_ms=p95_ms,
            )
            out.append(_Wanted((int(Kind.ROUTER_PRICE), job_type), sheet, (sheet.base_msat, sheet.surge, sheet.models)))
        status = status_of(self.load, self.backpressure, p95_ms)
        out.append(_Wanted((int(Kind.ROUTER_STATUS), STATUS_D), status, status.backpressure))
        return out

    async def announce(self, now: float) -> int:
        """Publish what changed (everything on the interval or after a reconnect); returns events published."""
        relays = self.relays
        assert relays is not None, "announce() needs relays"
        reconnects = relays.stats.get("reconnects", 0)
        full = time.monotonic() - self._last_full >= self.settings.announce_s or reconnects != self._reconnects
        wanted = self.wanted(now)
        keys = {w.key for w in wanted}
        for gone in [k for k in self.published if k not in keys]:  # e.g. a job type no node serves any more
            del self.published[gone]
        todo = [w for w in wanted if full or self.published.get(w.key, _MISSING) != w.compare]
        if not todo:
            return 0
        events = [self._sign(w, now) for w in todo]
        results = await asyncio.gather(*(relays.publish(e, timeout=PUBLISH_TIMEOUT_S) for e in events))
        for w, answers in zip(todo, results, strict=True):
            ok = any(r.ok for r in answers)
            self.counter.labels(_KIND_LABEL[w.key[0]], "ok" if ok else "failed").inc()
            if ok:
                self.published[w.key] = w.compare
        if full and relays.connected > 0:
            self._last_full = time.monotonic()
            self._reconnects = reconnects
        return len(events)

    def _sign(self, w: _Wanted, now: float) -> Event:
        kind, d = w.key
        created = max(int(now), self._created.get(w.key, 0) + 1)  # strictly newer: relays keep the latest
        self._created[w.key] = created
        expires = created + EXPIRY_INTERVALS * self.settings.announce_s
        return seal(
            self.keys, kind, w.payload, expiration=expires, extra_tags=[["d", d], ["t", "fedai"]], created_at=created
        )


_MISSING = object()
_KIND_LABEL = {int(Kind.ROUTER_CAPS): "caps", int(Kind.ROUTER_PRICE): "price", int(Kind.ROUTER_STATUS): "status"}
