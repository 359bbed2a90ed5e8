"""A deterministic discrete-event simulation of one router in front of a fleet, driving the real scheduler
(`rank`), index (`NodeIndex`) and retry budget (`RetryBudget`) with simulated time as `now` everywhere.

Modes:
- `router`: this router. Live load: `begin`/`end` around every call, so the scheduler sees its own in-flight
  requests at once. Health, cooldowns and failover exactly as `fedai_router.dispatch` does them.
- `seed`: the seed system's blind spot. The scheduler learns a node's load only from its heartbeats (the
  index's in-flight is never touched), everything else being the same. The load each node actually carries
  is tracked apart, whatever the scheduler believes.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import Pricing, price_msat
from fedai_router.index import NodeIndex
from fedai_router.node_state import NodeState
from fedai_router.retry import RetryBudget
from fedai_router.scheduler import Demand, rank
from fedai_sim.fleet import Attempt, Request, SimNode, build_fleet, build_requests
from fedai_sim.scenario import Down, Flap, PriceChange, Scenario, Up

Mode = Literal["router", "seed"]
MODES: tuple[Mode, ...] = ("router", "seed")

CONNECT_REFUSED_S = 0.002  # a node that is down refuses the connection this fast ("fast" failure)
REJECT_S = 0.001  # a full node answers 429 this fast
REJECT_RETRY_AFTER_S = 1.0  # the Retry-After of a node's 429 (fedai_node.limits.CAPACITY_RETRY_AFTER_MS)

Outcome = tuple[str, float | None] | None  # None: answered; else (error code, Retry-After seconds)


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    mode: Mode
    seed: int
    nodes: list[SimNode]
    requests: list[Request]
    end_s: float  # simulated time when the last request finished
    retries_denied: int  # failovers the retry budget refused
    wall_s: float  # real time the run took (not part of the report: it would break determinism)


class Simulation:
    def __init__(self, scenario: Scenario, mode: Mode, seed: int | None = None) -> None:
        self.scenario = scenario
        self.mode = mode
        self.seed = scenario.seed if seed is None else seed
        cfg = scenario.router
        self.policy = cfg.policy()
        self.k = cfg.max_attempts + cfg.spare_candidates
        self.index = NodeIndex()
        self.budget = RetryBudget(cfg.retry_budget_ratio, cfg.retry_budget_min_per_s, cfg.retry_budget_burst)
        self.rank_rng = random.Random(f"{self.seed}:rank")
        self.nodes = build_fleet(scenario, self.seed)
        self.by_name = {node.name: node for node in self.nodes}
        self.by_key = {node.pubkey: node for node in self.nodes}
        self.states: dict[str, NodeState] = {}
        self.requests = build_requests(scenario, self.seed)
        self.now = 0.0
        self.finished = 0
        self.retries_denied = 0
        self._serial = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []

    # --- the event loop -------------------------------------------------------------------------------------

    def at(self, t: float, action: Callable[[], None]) -> None:
        self._serial += 1
        heapq.heappush(self._heap, (t, self._serial, action))

    def run(self) -> RunResult:
        started = time.perf_counter()
        self._setup()
        while self._heap and self.finished < len(self.requests):
            self.now, _, action = heapq.heappop(self._heap)
            action()
        end = max([self.now, *(r.arrival for r in self.requests[-1:])])
        return RunResult(
            self.scenario,
            self.mode,
            self.seed,
            self.nodes,
            self.requests,
            end,
            self.retries_denied,
            time.perf_counter() - started,
        )

    def _setup(self) -> None:
        phase = random.Random(f"{self.seed}:heartbeats")
        interval = self.scenario.heartbeat_interval_s
        for node in self.nodes:
            state = self._report(node)
            self.index.set_manifest_trust(state, node.trust)
            node.load.append((0.0, 0))
            self.at(phase.uniform(0, interval), partial(self._heartbeat, node))
        for request in self.requests:
            self.at(request.arrival, partial(self._arrive, request))
        for event in self.scenario.events:
            for name in self.scenario.targets(event.node):
                self._schedule_event(event, self.by_name[name])

    def _schedule_event(self, event: Down | Up | Flap | PriceChange, node: SimNode) -> None:
        if isinstance(event, Down):
            self.at(event.at_s, partial(self._down, node, event.failure))
            if event.duration_s is not None:
                self.at(event.at_s + event.duration_s, partial(self._up, node))
        elif isinstance(event, Up):
            self.at(event.at_s, partial(self._up, node))
        elif isinstance(event, Flap):
            t = event.at_s
            while t < event.until_s:
                self.at(t, partial(self._down, node, event.failure))
                self.at(min(t + event.down_s, event.until_s), partial(self._up, node))
                t += event.period_s
        else:
            pricing = Pricing(
                input_msat=node.pricing.input_msat if event.input_msat is None else event.input_msat,
                output_msat=node.pricing.output_msat if event.output_msat is None else event.output_msat,
            )
            self.at(event.at_s, partial(self._reprice, node, pricing))

    # --- what nodes tell the router ---------------------------------------------------------------------------

    def _report(self, node: SimNode) -> NodeState:
        """A heartbeat: the node's descriptor with the load it really carries, as the real node sends it."""
        state = self.index.upsert(
            node.pubkey, node.descriptor(self.scenario.model), verified=True, heartbeat=True, seen=self.now
        )
        self.states[node.name] = state
        return state

    def _heartbeat(self, node: SimNode) -> None:
        if node.up:
            self._report(node)
        self.at(self.now + self.scenario.heartbeat_interval_s, partial(self._heartbeat, node))

    def _down(self, node: SimNode, failure: str) -> None:
        """The node dies: what it held fails now (before any answer, so the router may fail over)."""
        node.up, node.down_failure = False, failure
        held = list(node.holding.values())
        node.queue.clear()
        for attempt in held:
            self._release(attempt)
        for attempt in held:
            if not attempt.answered:
                self._answer(attempt, (ErrorCode.UPSTREAM_ERROR.value, None))

    def _up(self, node: SimNode) -> None:
        if not node.up:
            node.up = True
            self._report(node)

    def _reprice(self, node: SimNode, pricing: Pricing) -> None:
        node.pricing = pricing
        if node.up:
            self._report(node)

    # --- the router: rank, then the dispatch loop of fedai_router.dispatch ----------------------------------------

    def _arrive(self, request: Request) -> None:
        demand = Demand(
            model=self.scenario.model,
            input_tokens=request.input_tokens,
            max_tokens=request.max_tokens,
            max_price_msat=self.scenario.requests.max_price_msat,
        )
        try:
            request.candidates = rank(
                self.index.tables.get(demand.model),
                demand,
                now=self.now,
                policy=self.policy,
                k=self.k,
                rng=self.rank_rng,
            )
        except FedaiError as err:
            self._finish(request, err.code.value)
            return
        self.budget.on_request(self.now)
        self._next_attempt(request)

    def _next_attempt(self, request: Request) -> None:
        """`Dispatcher.serve`'s loop: skip candidates that filled up or cooled down since ranking, at most
        `max_attempts` calls, each retry only if the retry budget allows it."""
        while request.next_candidate < len(request.candidates):
            candidate = request.candidates[request.next_candidate]
            request.next_candidate += 1
            state = candidate.node
            if state.load >= state.capacity or state.cooldown_until > self.now:
                continue
            if request.attempts == self.scenario.router.max_attempts:
                break
            if request.last_error is not None and not self.budget.try_retry(self.now):
                self.retries_denied += 1
                break
            request.attempts += 1
            self._send(request, self.by_key[state.pubkey], state, candidate.model.pricing)
            return
        if request.last_error is None:
            self._finish(request, ErrorCode.NO_CAPACITY.value)
        elif request.last_error == ErrorCode.UPSTREAM_TIMEOUT.value:
            self._finish(request, ErrorCode.UPSTREAM_TIMEOUT.value)
        else:
            self._finish(request, ErrorCode.UPSTREAM_ERROR.value)

    def _send(self, request: Request, node: SimNode, state: NodeState, pricing: Pricing) -> None:
        self._serial += 1
        attempt = Attempt(request, node, self._serial, request.attempts, self.now, pricing)
        if self.mode == "router":
            self.index.begin(state)
        node.received += 1
        node.pending += 1
        node.max_sent = max(node.max_sent, node.pending)
        node.holding[attempt.serial] = attempt
        self._load_changed(node)
        timeout_s = self.scenario.router.timeout_s
        if not node.up:
            if node.down_failure == "fast":
                refused = (ErrorCode.UPSTREAM_ERROR.value, None)
                self.at(self.now + CONNECT_REFUSED_S, partial(self._node_done, attempt, refused))
            else:
                hung = (ErrorCode.UPSTREAM_TIMEOUT.value, None)
                self.at(self.now + timeout_s, partial(self._node_done, attempt, hung))
        elif node.serving >= node.capacity:
            if self.scenario.overload == "reject":
                outcome = (ErrorCode.CAPACITY_EXCEEDED.value, REJECT_RETRY_AFTER_S)
                self.at(self.now + REJECT_S, partial(self._node_done, attempt, outcome))
            else:
                node.queue.append(attempt)
                self.at(self.now + timeout_s, partial(self._router_timeout, attempt))
        else:
            self._start(attempt)

    def _finish(self, request: Request, outcome: str) -> None:
        request.outcome = outcome
        request.latency_ms = (self.now - request.arrival) * 1000
        self.finished += 1

    def _answer(self, attempt: Attempt, outcome: Outcome) -> None:
        """The router learns the outcome of a call: success ends the request, failure cools the node down and
        moves on to the next candidate."""
        attempt.answered = True
        node, request = attempt.node, attempt.request
        node.pending -= 1
        state = self.states[node.name]
        if self.mode == "router":
            self.index.end(state)
        if outcome is None:
            latency_ms = (self.now - attempt.sent_at) * 1000
            self.index.succeeded(state, latency_ms)
            price = price_msat(attempt.pricing, request.input_tokens, request.output_tokens)
            node.served += 1
            node.revenue_msat += price
            node.service_ms.append(latency_ms)
            request.node, request.price_msat = node.name, price
            self._finish(request, "ok")
            return
        code, retry_after_s = outcome
        node.failed += 1
        node.rejected += code == ErrorCode.CAPACITY_EXCEEDED.value
        self.index.failed(state, code, now=self.now, retry_after_s=retry_after_s)
        request.last_error = code
        self._next_attempt(request)

    # --- the nodes ----------------------------------------------------------------------------------------

    def _start(self, attempt: Attempt) -> None:
        node = attempt.node
        node.serving += 1
        attempt.started = True
        duration = node.latency_ms / 1000 * math.exp(node.latency_sigma * node.rng.gauss(0.0, 1.0))
        outcome: Outcome = None
        if node.rng.random() < node.failure_rate:
            duration *= node.rng.uniform(0.1, 0.5)
            outcome = (ErrorCode.UPSTREAM_ERROR.value, None)
        self.at(self.now + duration, partial(self._node_done, attempt, outcome))
        deadline = attempt.sent_at + self.scenario.router.timeout_s
        if deadline < self.now + duration:
            self.at(deadline, partial(self._router_timeout, attempt))

    def _node_done(self, attempt: Attempt, outcome: Outcome) -> None:
        if attempt.released:
            return  # the node went down meanwhile
        self._release(attempt)
        if not attempt.answered:
            self._answer(attempt, outcome)

    def _router_timeout(self, attempt: Attempt) -> None:
        if not attempt.answered:
            self._answer(attempt, (ErrorCode.UPSTREAM_TIMEOUT.value, None))

    def _release(self, attempt: Attempt) -> None:
        node = attempt.node
        attempt.released = True
        del node.holding[attempt.serial]
        if attempt.started:
            node.serving -= 1
        self._load_changed(node)
        while node.up and node.queue and node.serving < node.capacity:
            self._start(node.queue.popleft())

    def _load_changed(self, node: SimNode) -> None:
        held = node.outstanding
        node.max_held = max(node.max_held, held)
        node.load.append((self.now, held))


def simulate(scenario: Scenario, mode: Mode, seed: int | None = None) -> RunResult:
    return Simulation(scenario, mode, seed).run()
