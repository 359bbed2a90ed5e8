"""The simulated nodes and requests a scenario describes, drawn with seeded generators (same seed, same fleet
and the same request stream in every mode)."""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_router.scheduler.types import Candidate
from fedai_sim.scenario import NodeGroup, Range, Scenario


def draw(value: Range, rng: random.Random) -> float:
    return rng.uniform(*value) if isinstance(value, tuple) else float(value)


def pubkey_of(name: str) -> str:
    """A deterministic, well-spread 64-hex key (the scheduler breaks ties on its first 16 characters)."""
    return hashlib.sha256(f"fedai-sim-node:{name}".encode()).hexdigest()


@dataclass(slots=True, eq=False)
class Attempt:
    """One call of one request to one node."""

    request: Request
    node: SimNode
    serial: int  # unique in the run
    number: int  # 1 for the first attempt of the request
    sent_at: float
    pricing: Pricing  # the price the router ranked the node with
    started: bool = False  # the node is working on it (not queued, not refused)
    released: bool = False  # the node no longer holds it
    answered: bool = False  # the router has its outcome (answer, error or its own timeout)


@dataclass(slots=True, eq=False)
class Request:
    id: int
    arrival: float
    input_tokens: int
    max_tokens: int
    output_tokens: int
    attempts: int = 0
    node: str | None = None  # who served it
    outcome: str = "pending"  # "ok" or the error code the client got
    latency_ms: float | None = None  # arrival → answer, failovers included
    price_msat: int | None = None
    candidates: list[Candidate] = field(default_factory=list)  # ranked at arrival
    next_candidate: int = 0
    last_error: str | None = None


@dataclass(slots=True, eq=False)
class SimNode:
    name: str
    operator: str
    pubkey: str
    capacity: int
    pricing: Pricing
    latency_ms: float  # true median service time
    latency_sigma: float
    advertised_latency_ms: float
    failure_rate: float
    context_window: int
    max_tokens: int
    trust: float
    rng: random.Random
    up: bool = True
    down_failure: str = "fast"
    serving: int = 0
    queue: deque[Attempt] = field(default_factory=deque)
    holding: dict[int, Attempt] = field(default_factory=dict)  # every attempt the node holds, by serial
    # statistics
    received: int = 0  # attempts sent to the node
    served: int = 0
    failed: int = 0  # attempts that failed (errors, timeouts, rejections)
    rejected: int = 0  # of which 429 capacity_exceeded
    revenue_msat: int = 0
    pending: int = 0  # calls the router has sent and not yet seen answered (or given up on)
    max_sent: int = 0  # most of those at once: what the scheduler sent the node concurrently
    max_held: int = 0  # most requests the node held at once (with queued ones and those the router gave up on)
    service_ms: list[float] = field(default_factory=list)
    load: list[tuple[float, int]] = field(default_factory=list)  # (time, requests held) at every change

    @property
    def outstanding(self) -> int:
        """Requests the node holds now: working on, queued, or refusing."""
        return len(self.holding)

    def descriptor(self, model: str) -> NodeDescriptor:
        info = ModelInfo(
            id=model,
            context_window=self.context_window,
            max_tokens=self.max_tokens,
            pricing=self.pricing,
            latency_estimate_ms=self.advertised_latency_ms,
        )
        return NodeDescriptor(
            endpoint=f"http://{self.name}.sim",
            models=[info],
            capacity=Capacity(max_concurrent=self.capacity, in_flight=self.outstanding),
        )


def _nodes_of(group: NodeGroup, seed: int, rng: random.Random) -> list[SimNode]:
    out = []
    for name in group.node_names():
        latency = draw(group.latency_ms, rng)
        advertised = draw(group.advertised_latency_ms, rng) if group.advertised_latency_ms is not None else latency
        out.append(
            SimNode(
                name=name,
                operator=group.operator or group.name,
                pubkey=pubkey_of(name),
                capacity=max(1, round(draw(group.capacity, rng))),
                pricing=Pricing(
                    input_msat=round(draw(group.input_msat, rng)), output_msat=round(draw(group.output_msat, rng))
                ),
                latency_ms=latency,
                latency_sigma=group.latency_sigma,
                advertised_latency_ms=advertised,
                failure_rate=group.failure_rate,
                context_window=group.context_window,
                max_tokens=group.max_tokens,
                trust=group.trust,
                rng=random.Random(f"{seed}:node:{name}"),
            )
        )
    return out


def build_fleet(scenario: Scenario, seed: int) -> list[SimNode]:
    rng = random.Random(f"{seed}:fleet")
    return [node for group in scenario.nodes for node in _nodes_of(group, seed, rng)]


def build_requests(scenario: Scenario, seed: int) -> list[Request]:
    """Every request of the run, in arrival order: Poisson phases, sizes drawn per request."""
    rng = random.Random(f"{seed}:requests")
    sizes = scenario.requests
    times: list[float] = []
    for phase in scenario.arrivals:
        t, n = phase.start_s, 0
        end = phase.start_s + phase.duration_s if phase.duration_s is not None else float("inf")
        while phase.requests is None or n < phase.requests:
            t += rng.expovariate(phase.rate_per_s)
            if t >= end:
                break
            times.append(t)
            n += 1
    times.sort()
    out = []
    for i, t in enumerate(times):
        max_tokens = max(1, round(draw(sizes.max_tokens, rng)))
        out.append(
            Request(
                id=i,
                arrival=t,
                input_tokens=max(1, round(draw(sizes.input_tokens, rng))),
                max_tokens=max_tokens,
                output_tokens=max(1, min(max_tokens, round(max_tokens * draw(sizes.output_fraction, rng)))),
            )
        )
    return out
