"""A deterministic discrete-event simulator of a router and its fleet that drives the real scheduler, index and
retry budget unchanged (`python -m fedai_sim`, `fedai simulate`; docs/simulator.md)."""

from fedai_sim.engine import MODES, Mode, RunResult, Simulation, simulate
from fedai_sim.scenario import Scenario, ScenarioError, builtin, builtin_names, load_file, parse

__all__ = [
    "MODES",
    "Mode",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "builtin",
    "builtin_names",
    "load_file",
    "parse",
    "simulate",
]
