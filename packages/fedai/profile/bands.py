"""Coarse bands for hardware and benchmark measurements. Pure functions; every band is from a fixed list.

Bands are ordered (lowest first), so requirements compare with `at_least`. Sizes get a 10% tolerance
before banding: a "16 GB" machine reports ~15.5 GiB of RAM, a "24 GB" GPU 23.99 GiB.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GIB = 1024**3
SIZE_TOLERANCE = 0.9  # a value within 10% below an edge counts as reaching it

CORES = ("1-2", "3-4", "5-8", "9-16", "17+")
_CORE_EDGES = (3, 5, 9, 17)

RAM = ("<4GiB", "4-8GiB", "8-16GiB", "16-32GiB", "32-64GiB", "64GiB+")
_RAM_EDGES_GIB = (4, 8, 16, 32, 64)

DISK = ("<4GiB", "4-16GiB", "16-64GiB", "64-256GiB", "256GiB+")
_DISK_EDGES_GIB = (4, 16, 64, 256)

VRAM = ("none", "<8GiB", "8-16GiB", "16-24GiB", "24-48GiB", "48-80GiB", "80GiB+")
_VRAM_EDGES_GIB = (8, 16, 24, 48, 80)

GPU_COUNT = ("0", "1", "2", "3-4", "5-8", "9+")
_GPU_COUNT_EDGES = (1, 2, 3, 5, 9)

# Benchmark bands. Edges were set from measurements: this repository's 2-core AMD EPYC CI machine does
# ~2.8 M sha256/s and ~12 GiB/s copy (high); a Raspberry Pi 4 class board is expected in `low`.
PERF = ("low", "medium", "high")
CPU_EDGES_OPS = (500_000.0, 1_500_000.0)  # sha256 of a 32-byte digest, one thread, per second
MEMORY_EDGES_MIB = (2_000.0, 6_000.0)  # MiB/s, for both copy and strided scan
GPU_EDGES_TFLOPS = (2.0, 20.0)  # fp16 matmul

OS_FAMILIES = ("linux", "macos", "windows", "bsd", "other")
ARCHES = ("x86_64", "aarch64", "arm", "riscv64", "ppc64le", "s390x", "other")

# (pattern in the lowercased model name, family). First match wins; the output is always from this list.
_CPU_FAMILIES = (
    ("epyc", "AMD EPYC"),  # AMD first: their model names contain "Core" ("64-Core Processor")
    ("threadripper", "AMD Threadripper"),
    ("ryzen", "AMD Ryzen"),
    ("opteron", "AMD Opteron"),
    ("athlon", "AMD Athlon"),
    ("xeon", "Intel Xeon"),
    ("intel core ultra", "Intel Core Ultra"),
    ("intel core", "Intel Core"),
    ("celeron", "Intel Celeron"),
    ("pentium", "Intel Pentium"),
    ("atom", "Intel Atom"),
    ("graviton", "AWS Graviton"),
    ("ampere", "Ampere"),
    ("neoverse", "ARM Neoverse"),
    ("cortex", "ARM Cortex"),
    ("apple", "Apple"),
)
_CPU_VENDORS = (
    ("genuineintel", "Intel"),
    ("intel", "Intel"),
    ("authenticamd", "AMD"),
    ("amd", "AMD"),
    ("arm", "ARM"),
    ("aarch64", "ARM"),
    ("apple", "Apple"),
)
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


def _band(value: float, edges: Sequence[float], labels: Sequence[str]) -> str:
    """`labels[i]` where `edges[i-1] <= value < edges[i]` (len(labels) == len(edges) + 1)."""
    for i, edge in enumerate(edges):
        if value < edge:
            return labels[i]
    return labels[-1]


def _size_band(size_bytes: float, edges_gib: Sequence[int], labels: Sequence[str]) -> str:
    return _band(size_bytes / GIB / SIZE_TOLERANCE, edges_gib, labels)


def cores_band(logical_cores: int) -> str:
    return _band(max(1, logical_cores), _CORE_EDGES, CORES)


def ram_band(total_bytes: int) -> str:
    return _size_band(total_bytes, _RAM_EDGES_GIB, RAM)


def disk_band(free_bytes: int) -> str:
    return _size_band(free_bytes, _DISK_EDGES_GIB, DISK)


def vram_band(total_mib: int | None) -> str:
    """VRAM of one GPU (or a sum) in MiB, as nvidia-smi reports it; None or 0 is `none`."""
    if not total_mib:
        return "none"
    return _size_band(total_mib * 1024**2, _VRAM_EDGES_GIB, VRAM[1:])


def gpu_count_band(count: int) -> str:
    return _band(count, _GPU_COUNT_EDGES, GPU_COUNT)


def cpu_band(sha256_ops_s: float) -> str:
    return _band(sha256_ops_s, CPU_EDGES_OPS, PERF)


def memory_band(memcpy_mib_s: float, stride_mib_s: float) -> str:
    """The lower of the copy and strided-scan bands: a machine is as fast as its slower memory path."""
    return _band(min(memcpy_mib_s, stride_mib_s), MEMORY_EDGES_MIB, PERF)


def gpu_band(tflops: float | None) -> str | None:
    return None if tflops is None else _band(tflops, GPU_EDGES_TFLOPS, PERF)


def os_family(system: str) -> str:
    """`platform.system()` → one of OS_FAMILIES."""
    name = system.strip().lower()
    if name == "darwin":
        return "macos"
    if name.endswith("bsd"):
        return "bsd"
    return name if name in OS_FAMILIES else "other"


def arch_family(machine: str) -> str:
    """`platform.machine()` → one of ARCHES."""
    name = machine.strip().lower()
    name = _ARCH_ALIASES.get(name, name)
    if name.startswith("armv"):
        return "arm"
    return name if name in ARCHES else "other"


def cpu_family(model_name: str, vendor: str = "") -> str:
    """Vendor + family from a CPU model string ("Intel Xeon", "AMD EPYC"), else the vendor, else "unknown".

    Only names from fixed tables come out: model numbers, frequencies and anything else are dropped.
    """
    model = re.sub(r"\((r|tm)\)", "", model_name.lower())
    for pattern, family in _CPU_FAMILIES:
        if pattern in model:
            return family
    for source in (vendor.lower(), model):
        for pattern, family in _CPU_VENDORS:
            if pattern in source:
                return family
    return "unknown"


def gpu_vendor(name: str) -> str:
    """A GPU name reduced to its vendor ("NVIDIA"); nothing else of the name is kept."""
    lowered = name.lower()
    for pattern, vendor in (
        ("nvidia", "NVIDIA"),
        ("geforce", "NVIDIA"),
        ("tesla", "NVIDIA"),
        ("quadro", "NVIDIA"),
        ("amd", "AMD"),
        ("radeon", "AMD"),
        ("intel", "Intel"),
    ):
        if pattern in lowered:
            return vendor
    return "unknown"


def at_least(band: str, minimum: str, order: Sequence[str]) -> bool:
    """True when `band` is `minimum` or above in `order`; an unknown band never qualifies."""
    if band not in order or minimum not in order:
        return False
    return order.index(band) >= order.index(minimum)
