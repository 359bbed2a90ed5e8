"""A short deterministic CPU and memory benchmark: the work is fixed, only its duration is measured.

* CPU: a sha256 chain (each digest hashed again), one thread. Python call overhead dominates, so this
  ranks a core's single-thread speed, which is what request handling and signing need.
* Memory: copying a fixed buffer, and scanning it with a 64-byte stride (one byte per cache line).
* GPU: only when `torch` with CUDA is importable, a timed fp16 matmul; otherwise no GPU score, and a GPU
  listed in the profile earns no benchmark credit (docs/manifests.md).

The full run takes about 1 s on a current x86 core (longer on small boards); `quick` is for tests.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass
from typing import Any

from fedai.profile import bands
from fedai.protocol.messages import BenchScores

SEED = b"fedai-bench-v1"
CACHE_LINE = 64
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class Workload:
    sha256_iterations: int
    buffer_mib: int
    copy_rounds: int
    stride_rounds: int


FULL = Workload(sha256_iterations=2_000_000, buffer_mib=64, copy_rounds=16, stride_rounds=16)
QUICK = Workload(sha256_iterations=100_000, buffer_mib=8, copy_rounds=4, stride_rounds=4)


def sha256_chain(iterations: int, seed: bytes = SEED) -> bytes:
    """`iterations` times h = sha256(h), from sha256(seed). Deterministic: same input, same digest."""
    digest = hashlib.sha256(seed).digest()
    sha = hashlib.sha256
    for _ in range(iterations):
        digest = sha(digest).digest()
    return digest


def _timed_sha256(iterations: int) -> float:
    started = time.perf_counter()
    sha256_chain(iterations)
    return iterations / max(time.perf_counter() - started, 1e-9)


def _timed_memory(buffer_mib: int, copy_rounds: int, stride_rounds: int) -> tuple[float, float]:
    """(copy MiB/s, strided-scan MiB/s) over a buffer of `buffer_mib`, filled with a fixed pattern."""
    size = buffer_mib * MIB
    src = bytearray(bytes(range(256)) * (size // 256))
    dst = bytearray(size)
    dst[:] = src  # fault every page in before timing
    started = time.perf_counter()
    for _ in range(copy_rounds):
        dst[:] = src
    copy_s = time.perf_counter() - started
    view = memoryview(src)
    started = time.perf_counter()
    for _ in range(stride_rounds):
        bytes(view[::CACHE_LINE])
    stride_s = time.perf_counter() - started
    view.release()
    return buffer_mib * copy_rounds / max(copy_s, 1e-9), buffer_mib * stride_rounds / max(stride_s, 1e-9)


def gpu_tflops(size: int = 4096, rounds: int = 10) -> float | None:
    """fp16 matmul throughput on the first CUDA device, or None without torch + CUDA."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    a = torch.ones((size, size), dtype=torch.float16, device="cuda")
    b = torch.ones((size, size), dtype=torch.float16, device="cuda")
    torch.matmul(a, b)  # warm-up (kernel selection)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    return 2 * size**3 * rounds / max(time.perf_counter() - started, 1e-9) / 1e12


def _round(value: float, digits: int = 3) -> float:
    """Three significant digits: enough to rank machines, too coarse to fingerprint one."""
    return float(f"{value:.{digits}g}")


def run(*, quick: bool = False, gpu: bool = True) -> BenchScores:
    """Run the benchmark; scores in ops/s and MiB/s with the bands they fall into."""
    work = QUICK if quick else FULL
    started = time.perf_counter()
    ops = _round(_timed_sha256(work.sha256_iterations))
    copy, stride = (_round(v) for v in _timed_memory(work.buffer_mib, work.copy_rounds, work.stride_rounds))
    measured = gpu_tflops() if gpu and not quick else None
    tflops = None if measured is None else _round(measured)
    # bands from the rounded scores, so whoever recomputes them from the manifest gets the same
    return BenchScores(
        sha256_ops_s=ops,
        memcpy_mib_s=copy,
        stride_mib_s=stride,
        cpu_band=bands.cpu_band(ops),
        memory_band=bands.memory_band(copy, stride),
        gpu_tflops=tflops,
        gpu_band=bands.gpu_band(tflops),
        quick=quick,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
