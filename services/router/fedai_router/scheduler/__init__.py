"""Node selection as pure functions: no I/O, importable by benchmarks and the simulator."""

from fedai_router.scheduler.select import Candidate, Demand, rank

__all__ = ["Candidate", "Demand", "rank"]
