"""Node selection as pure functions: no I/O, importable by the simulator and the benchmarks.

`rank()` works on a `ModelTable` (column arrays the registry keeps current) and is fast at any registry size;
`explain()` judges node by node and is the readable reference `rank()` is tested against.
"""

from fedai_router.scheduler.explain import Explanation, explain, verdict
from fedai_router.scheduler.rank import no_route, rank
from fedai_router.scheduler.table import ModelTable
from fedai_router.scheduler.types import REASONS, Candidate, Demand, Policy, ScoreParts, Weights

__all__ = [
    "REASONS",
    "Candidate",
    "Demand",
    "Explanation",
    "ModelTable",
    "Policy",
    "ScoreParts",
    "Weights",
    "explain",
    "no_route",
    "rank",
    "verdict",
]
