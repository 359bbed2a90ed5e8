"""Scenarios as data: a fleet of simulated nodes, Poisson arrivals, request sizes, scheduled events and the
router's settings. Loaded from TOML (the built-ins are `scenarios/*.toml` next to this module) and checked
with messages that name the offending field."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from fedai_router.scheduler.types import Policy, Weights

BUILTIN_DIR = Path(__file__).parent / "scenarios"

# A fixed value, or [low, high]: drawn uniformly once per node (fleet parameters) or per request (sizes).
Range = float | tuple[float, float]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
NodeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z", max_length=64)]

_POLICY = Policy()
_WEIGHTS = Weights()


class ScenarioError(ValueError):
    """A scenario that cannot be loaded or run, with the place of the problem in the message."""


class _Data(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base: immutable, unknown keys are an error (a typo must not be silently ignored)."""


class WeightsConfig(_Data, frozen=True, kw_only=True):
    """The scheduler's score weights (`fedai_router.scheduler.Weights`, the ROUTER_W_* variables)."""

    price: NonNegative = _WEIGHTS.price
    load: NonNegative = _WEIGHTS.load
    latency_per_s: NonNegative = _WEIGHTS.latency_per_s
    reliability: NonNegative = _WEIGHTS.reliability
    trust: NonNegative = _WEIGHTS.trust
    unverified: NonNegative = _WEIGHTS.unverified

    def weights(self) -> Weights:
        return Weights(**msgspec.structs.asdict(self))


class RouterConfig(_Data, frozen=True, kw_only=True):
    """The simulated router: the same knobs as the real one (RouterSettings), defaults included."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    spare_candidates: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 8  # fedai_router.infer.SPARE_CANDIDATES
    timeout_s: Positive = 60.0  # ROUTER_NODE_TIMEOUT_MS
    heartbeat_ttl_s: Positive = _POLICY.heartbeat_ttl_s
    random_top_n: Annotated[int, msgspec.Meta(ge=1, le=100)] = _POLICY.random_top_n
    min_latency_samples: Annotated[int, msgspec.Meta(ge=0)] = _POLICY.min_latency_samples
    retry_budget_ratio: NonNegative = 0.2
    retry_budget_min_per_s: NonNegative = 5.0
    retry_budget_burst: NonNegative = 20.0
    weights: WeightsConfig = msgspec.field(default_factory=WeightsConfig)

    def policy(self) -> Policy:
        return Policy(
            heartbeat_ttl_s=self.heartbeat_ttl_s,
            announce_ttl_s=_POLICY.announce_ttl_s,
            weights=self.weights.weights(),
            random_top_n=self.random_top_n,
            min_latency_samples=self.min_latency_samples,
        )


class Arrivals(_Data, frozen=True, kw_only=True):
    """One phase of Poisson arrivals from `start_s`: for `duration_s` seconds, or until `requests` arrived."""

    rate_per_s: Positive
    start_s: NonNegative = 0.0
    duration_s: Positive | None = None
    requests: Annotated[int, msgspec.Meta(ge=1)] | None = None


class RequestSizes(_Data, frozen=True, kw_only=True):
    """Token counts of each request (drawn per request) and the client's price cap."""

    input_tokens: Range = (100.0, 1000.0)
    max_tokens: Range = (64.0, 512.0)
    output_fraction: Range = (0.3, 1.0)  # of max_tokens the node actually produces (what is billed)
    max_price_msat: Annotated[int, msgspec.Meta(ge=0)] | None = None


class NodeGroup(_Data, frozen=True, kw_only=True):
    """`count` alike nodes named `name-0…` (or just `name` when count is 1), run by `operator`."""

    name: NodeName
    count: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    operator: str | None = None  # default: the group name
    capacity: Range = 4.0  # max_concurrent, rounded to a whole number ≥ 1
    input_msat: Range = 1000.0  # per 1k tokens
    output_msat: Range = 1000.0
    latency_ms: Range = 1000.0  # median of the node's lognormal service time
    latency_sigma: NonNegative = 0.25  # spread of the lognormal (0: always the median)
    advertised_latency_ms: Range | None = None  # what the descriptor claims (default: the true median)
    failure_rate: Fraction = 0.0  # chance that a call fails (upstream_error) part-way through
    context_window: Annotated[int, msgspec.Meta(ge=1)] = 8192
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
    trust: Fraction = 0.5  # what the node's manifest earns it

    def node_names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}-{i}" for i in range(self.count)]


class Down(_Data, tag="down", tag_field="kind", frozen=True, kw_only=True):
    """`node` (a node or a whole group) goes down at `at_s`; back after `duration_s` (never, if omitted).
    While down it sends no heartbeats and calls fail: at once (`fast`) or after the router's timeout."""

    node: str
    at_s: NonNegative
    duration_s: Positive | None = None
    failure: Literal["fast", "timeout"] = "fast"


class Up(_Data, tag="up", tag_field="kind", frozen=True, kw_only=True):
    """`node` recovers at `at_s` (and heartbeats at once)."""

    node: str
    at_s: NonNegative


class Flap(_Data, tag="flap", tag_field="kind", frozen=True, kw_only=True):
    """From `at_s` to `until_s`, `node` is down for `down_s` at the start of every `period_s`."""

    node: str
    at_s: NonNegative
    until_s: Positive
    period_s: Positive
    down_s: Positive
    failure: Literal["fast", "timeout"] = "fast"


class PriceChange(_Data, tag="price", tag_field="kind", frozen=True, kw_only=True):
    """`node` changes its prices at `at_s` and heartbeats the new descriptor at once."""

    node: str
    at_s: NonNegative
    input_msat: Annotated[int, msgspec.Meta(ge=0)] | None = None
    output_msat: Annotated[int, msgspec.Meta(ge=0)] | None = None


Event = Down | Up | Flap | PriceChange


class Scenario(_Data, frozen=True, kw_only=True):
    name: NodeName
    description: str = ""
    model: str = "sim-model"
    seed: int = 1
    heartbeat_interval_s: Positive = 5.0  # NODE_HEARTBEAT_MS; each node starts at a random phase
    overload: Literal["reject", "queue"] = "reject"  # a node beyond its capacity: 429, or queue (the seed's nodes)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    requests: RequestSizes = msgspec.field(default_factory=RequestSizes)
    arrivals: Annotated[list[Arrivals], msgspec.Meta(min_length=1)]
    nodes: Annotated[list[NodeGroup], msgspec.Meta(min_length=1)]
    events: list[Event] = msgspec.field(default_factory=list)

    def node_names(self) -> list[str]:
        return [name for group in self.nodes for name in group.node_names()]

    def targets(self, name: str) -> list[str]:
        """The nodes an event's `node` names: one node, or every node of a group."""
        for group in self.nodes:
            if name == group.name:
                return group.node_names()
        return [name] if name in set(self.node_names()) else []


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def builtin(name: str) -> Scenario:
    path = BUILTIN_DIR / f"{name}.toml"
    if not re.fullmatch(r"[a-z0-9-]+", name) or not path.is_file():
        raise ScenarioError(f"unknown scenario {name!r} (built-in: {', '.join(builtin_names())})")
    return load_file(path)


def load_file(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario ({exc.strerror})") from None
    return parse(text, source=str(path))


def parse(text: str, *, source: str = "<scenario>") -> Scenario:
    """A scenario from TOML text; `ScenarioError` names the source and the field at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: invalid TOML: {exc}") from None
    return from_dict(data, source=source)


def from_dict(data: dict[str, Any], *, source: str = "<scenario>") -> Scenario:
    try:
        scenario = msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {_readable(str(exc))}") from None
    problems = check(scenario)
    if problems:
        raise ScenarioError(f"{source}: " + "; ".join(problems))
    return scenario


def _readable(message: str) -> str:
    """msgspec's "Expected `int` >= 1, got `0` - at `$.nodes[0].capacity`" as "nodes[0].capacity: Expected …"."""
    match = re.fullmatch(r"(.*) - at `\$\.?(.*)`", message, flags=re.DOTALL)
    if not match:
        return message
    where, what = match.group(2) or "top level", match.group(1)
    if where.startswith("events[") and where.endswith(".kind"):
        what += " (kinds: down, up, flap, price)"
    return f"{where}: {what}"


def _range_problems(where: str, value: Range | None) -> list[str]:
    if isinstance(value, tuple) and value[0] > value[1]:
        return [f"{where}: low {value[0]:g} is above high {value[1]:g}"]
    if value is not None and min(value if isinstance(value, tuple) else (value,)) < 0:
        return [f"{where}: must not be negative"]
    return []


def check(s: Scenario) -> list[str]:
    """What msgspec cannot check: ranges, exclusive options, names that events refer to."""
    return _range_and_option_problems(s) + _name_problems(s) + _event_problems(s)


def _range_and_option_problems(s: Scenario) -> list[str]:
    problems: list[str] = []
    for i, phase in enumerate(s.arrivals):
        if (phase.duration_s is None) == (phase.requests is None):
            problems.append(f"arrivals[{i}]: give exactly one of duration_s and requests")
    for field in ("input_tokens", "max_tokens", "output_fraction"):
        problems += _range_problems(f"requests.{field}", getattr(s.requests, field))
    for i, group in enumerate(s.nodes):
        for field in ("capacity", "input_msat", "output_msat", "latency_ms", "advertised_latency_ms"):
            problems += _range_problems(f"nodes[{i}].{field}", getattr(group, field))
    return problems


def _name_problems(s: Scenario) -> list[str]:
    names = s.node_names()
    groups = [g.name for g in s.nodes]
    twice = {n for n in names if names.count(n) > 1} | {g for g in groups if groups.count(g) > 1}
    return [f"nodes: the name {name!r} is used twice" for name in twice]


def _event_problems(s: Scenario) -> list[str]:
    problems: list[str] = []
    groups = ", ".join(g.name for g in s.nodes)
    for i, event in enumerate(s.events):
        if not s.targets(event.node):
            problems.append(f"events[{i}].node: no node or group named {event.node!r} (groups: {groups})")
        if isinstance(event, Flap) and (event.down_s >= event.period_s or event.until_s <= event.at_s):
            problems.append(f"events[{i}]: a flap needs down_s < period_s and until_s > at_s")
        if isinstance(event, PriceChange) and event.input_msat is None and event.output_msat is None:
            problems.append(f"events[{i}]: a price change needs input_msat or output_msat")
    return problems
