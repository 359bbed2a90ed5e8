"""What a machine can run, from its profile and benchmark. Pure: rules are data, every verdict has reasons.

A node profile (e.g. `small-cpu`) or role (e.g. `public-node`) is a list of requirements, each a minimum
band of one measurement. A requirement on the benchmark is unmet when no benchmark was run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedai.profile import bands
from fedai.protocol.messages import BenchScores, HardwareProfile

Reading = Callable[[HardwareProfile, BenchScores | None], str | None]


@dataclass(frozen=True, slots=True)
class Measure:
    label: str
    order: Sequence[str]
    read: Reading


CORES = Measure("logical cores", bands.CORES, lambda p, b: p.cores)
RAM = Measure("RAM", bands.RAM, lambda p, b: p.ram)
DISK = Measure("free disk", bands.DISK, lambda p, b: p.disk_free)
VRAM = Measure("VRAM (largest GPU)", bands.VRAM, lambda p, b: p.vram)
VRAM_TOTAL = Measure("VRAM (all GPUs)", bands.VRAM, lambda p, b: p.vram_total)
CPU_BENCH = Measure("CPU benchmark", bands.PERF, lambda p, b: None if b is None else bands.cpu_band(b.sha256_ops_s))
MEMORY_BENCH = Measure(
    "memory benchmark",
    bands.PERF,
    lambda p, b: None if b is None else bands.memory_band(b.memcpy_mib_s, b.stride_mib_s),
)


@dataclass(frozen=True, slots=True)
class Requirement:
    measure: Measure
    minimum: str

    def check(self, profile: HardwareProfile, bench: BenchScores | None) -> tuple[bool, str]:
        have = self.measure.read(profile, bench)
        label = self.measure.label
        if have is None:
            return False, f"{label}: not measured (run `fedai bench`); needs ≥ {self.minimum}"
        if bands.at_least(have, self.minimum, self.measure.order):
            return True, f"{label} {have} meets ≥ {self.minimum}"
        return False, f"{label} {have} is below {self.minimum}"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    description: str
    requires: tuple[Requirement, ...]
    needs_profile: bool = False  # roles: at least one real (non-mock) node profile must be eligible


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    description: str
    eligible: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    profiles: tuple[Verdict, ...]
    roles: tuple[Verdict, ...]
    recommended: tuple[str, ...] = field(default=())  # eligible node profiles, most capable first

    def to_dict(self) -> dict[str, Any]:
        return {
            "profiles": [v.to_dict() for v in self.profiles],
            "roles": [v.to_dict() for v in self.roles],
            "recommended": list(self.recommended),
        }


def _r(measure: Measure, minimum: str) -> Requirement:
    return Requirement(measure, minimum)


MOCK = "mock/demo"

# Node profiles, least capable first. Sizes assume q4 GGUF weights (~0.6 GB per 1B parameters) plus KV cache.
# PROFILES and ROLES are tables (one rule per row: name, what it runs, requirements), so they are not reformatted.
PROFILES: tuple[Rule, ...] = (
    Rule(MOCK, "the mock runner: demos and tests only, no real model", ()),
    Rule("small-cpu", "≤1B parameters, q4, llama.cpp on CPU",
         (_r(RAM, "4-8GiB"), _r(DISK, "4-16GiB"), _r(CPU_BENCH, "medium"))),
    Rule("medium-cpu", "≤8B parameters, q4, llama.cpp on CPU",
         (_r(CORES, "5-8"), _r(RAM, "16-32GiB"), _r(DISK, "16-64GiB"), _r(CPU_BENCH, "medium"),
          _r(MEMORY_BENCH, "medium"))),
    Rule("gpu-small", "≤8B parameters on one GPU (llama.cpp CUDA or vLLM)",
         (_r(VRAM, "8-16GiB"), _r(RAM, "16-32GiB"), _r(DISK, "16-64GiB"))),
    Rule("gpu-large", "≥30B parameters across GPUs (vLLM)",
         (_r(VRAM_TOTAL, "48-80GiB"), _r(RAM, "32-64GiB"), _r(DISK, "64-256GiB"))),
)  # fmt: skip

# Roles in a network. A public router's nodes must leave headroom for signing and HTTP next to inference
# (llama.cpp on 2-core machines is unstable: docs/decisions.md#llama-cpp), and must have run the full benchmark.
ROLES: tuple[Rule, ...] = (
    Rule("public-node", "serve a public router's traffic",
         (_r(CORES, "3-4"), _r(RAM, "8-16GiB"), _r(DISK, "16-64GiB"), _r(CPU_BENCH, "medium"),
          _r(MEMORY_BENCH, "medium")), needs_profile=True),
    Rule("router", "run a router (signature checks, Postgres)",
         (_r(CORES, "1-2"), _r(RAM, "4-8GiB"), _r(DISK, "16-64GiB"), _r(CPU_BENCH, "medium"))),
)  # fmt: skip


def judge(
    rule: Rule, profile: HardwareProfile, bench: BenchScores | None, *, real_profiles: Sequence[str] = ()
) -> Verdict:
    """One rule's verdict: eligible when every requirement is met; reasons list failures first."""
    met: list[str] = []
    failed: list[str] = []
    for requirement in rule.requires:
        ok, reason = requirement.check(profile, bench)
        (met if ok else failed).append(reason)
    if rule.needs_profile:
        if real_profiles:
            met.append(f"can run {', '.join(real_profiles)}")
        else:
            failed.append("no real model profile fits (only mock/demo)")
    if rule.needs_profile and bench is not None and bench.quick:
        failed.append("the quick benchmark is for tests: run the full `fedai bench`")
    if not rule.requires and not rule.needs_profile:
        met.append("no requirements")
    return Verdict(rule.name, rule.description, not failed, tuple(failed + met))


def recommend(profile: HardwareProfile, bench: BenchScores | None) -> Recommendation:
    """Node profiles this machine can run and the roles it qualifies for, each with reasons."""
    profiles = tuple(judge(rule, profile, bench) for rule in PROFILES)
    real = [v.name for v in profiles if v.eligible and v.name != MOCK]
    roles = tuple(judge(rule, profile, bench, real_profiles=real) for rule in ROLES)
    recommended = tuple(v.name for v in reversed(profiles) if v.eligible)
    return Recommendation(profiles, roles, recommended)
