"""fedai.profile.benchmark (fixed work, measured time) and fedai.profile.recommend (rules with reasons)."""

from __future__ import annotations

import hashlib
import sys
import types
from typing import Any

import pytest

from fedai.profile import bands, benchmark
from fedai.profile.recommend import MOCK, recommend
from fedai.protocol.messages import BenchScores, HardwareProfile


def test_sha256_chain_is_deterministic_fixed_work() -> None:
    expected = hashlib.sha256(benchmark.SEED).digest()
    for _ in range(1000):
        expected = hashlib.sha256(expected).digest()
    assert benchmark.sha256_chain(1000) == expected
    assert benchmark.sha256_chain(1000) != benchmark.sha256_chain(1001)


def test_quick_run_measures_and_bands_its_scores() -> None:
    scores = benchmark.run(quick=True)
    assert scores.quick is True and scores.gpu_tflops is None and scores.gpu_band is None
    assert scores.sha256_ops_s > 0 and scores.memcpy_mib_s > 0 and scores.stride_mib_s > 0
    assert scores.cpu_band == bands.cpu_band(scores.sha256_ops_s)
    assert scores.memory_band == bands.memory_band(scores.memcpy_mib_s, scores.stride_mib_s)
    assert 0 < scores.duration_ms < 5000
    # three significant digits: coarse enough not to fingerprint a machine
    assert len(f"{scores.sha256_ops_s:.0f}".rstrip("0")) <= 3


def test_quick_workload_is_much_smaller_than_the_full_one() -> None:
    assert benchmark.QUICK.sha256_iterations * 10 <= benchmark.FULL.sha256_iterations
    assert benchmark.QUICK.buffer_mib < benchmark.FULL.buffer_mib


@pytest.mark.parametrize(
    ("ops", "band"), [(100_000, "low"), (499_999, "low"), (500_000, "medium"), (1_499_999, "medium"), (3e6, "high")]
)
def test_cpu_bands(ops: float, band: str) -> None:
    assert bands.cpu_band(ops) == band


def test_memory_band_is_the_slower_path() -> None:
    assert bands.memory_band(10_000, 10_000) == "high"
    assert bands.memory_band(10_000, 1_000) == "low"
    assert bands.memory_band(3_000, 20_000) == "medium"


def test_gpu_tflops_absent_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    assert benchmark.gpu_tflops() is None


def test_gpu_tflops_measured_with_a_cuda_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    cuda = types.SimpleNamespace(is_available=lambda: True, synchronize=lambda: calls.append("sync"))
    fake: Any = types.SimpleNamespace(
        cuda=cuda,
        float16="f16",
        ones=lambda shape, dtype, device: (shape, dtype, device),
        matmul=lambda a, b: calls.append("matmul"),
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    result = benchmark.gpu_tflops(size=64, rounds=3)
    assert result is not None and result > 0
    assert calls.count("matmul") == 4  # warm-up + 3 timed
    cuda.is_available = lambda: False
    assert benchmark.gpu_tflops() is None


def _profile(**fields: str) -> HardwareProfile:
    base = {
        "os": "linux",
        "arch": "x86_64",
        "cpu": "AMD EPYC",
        "cores": "1-2",
        "ram": "4-8GiB",
        "disk_free": "16-64GiB",
    }
    return HardwareProfile(**{**base, **fields})


def _bench(cpu: float = 2e6, mem: float = 10_000, *, quick: bool = False) -> BenchScores:
    return BenchScores(
        sha256_ops_s=cpu,
        memcpy_mib_s=mem,
        stride_mib_s=mem,
        cpu_band=bands.cpu_band(cpu),
        memory_band=bands.memory_band(mem, mem),
        quick=quick,
        duration_ms=900,
    )


def _verdicts(profile: HardwareProfile, bench: BenchScores | None) -> dict[str, tuple[bool, tuple[str, ...]]]:
    rec = recommend(profile, bench)
    return {v.name: (v.eligible, v.reasons) for v in (*rec.profiles, *rec.roles)}


def test_mock_is_always_possible() -> None:
    tiny = _profile(ram="<4GiB", disk_free="<4GiB")
    rec = recommend(tiny, None)
    assert rec.recommended == (MOCK,)
    verdicts = _verdicts(tiny, None)
    assert verdicts["small-cpu"][0] is False
    assert any("RAM <4GiB is below 4-8GiB" in r for r in verdicts["small-cpu"][1])
    assert any("not measured" in r for r in verdicts["small-cpu"][1])
    assert verdicts["public-node"][0] is False
    assert "no real model profile fits (only mock/demo)" in verdicts["public-node"][1]


def test_small_cpu_machine() -> None:
    v = _verdicts(_profile(), _bench())
    assert v["small-cpu"][0] and not v["medium-cpu"][0] and not v["gpu-small"][0]
    assert v["medium-cpu"][1][0] == "logical cores 1-2 is below 5-8"  # failures first
    assert not v["public-node"][0] and "logical cores 1-2 is below 3-4" in v["public-node"][1]
    assert v["router"][0] and "RAM 4-8GiB meets ≥ 4-8GiB" in v["router"][1]
    assert not _verdicts(_profile(disk_free="4-16GiB"), _bench())["router"][0]  # Postgres needs room
    assert recommend(_profile(), _bench()).recommended == ("small-cpu", MOCK)


def test_slow_cpu_cannot_run_a_real_model() -> None:
    v = _verdicts(_profile(), _bench(cpu=200_000))
    assert not v["small-cpu"][0] and "CPU benchmark low is below medium" in v["small-cpu"][1]


def test_big_cpu_machine_qualifies_for_public_node_only_with_the_full_bench() -> None:
    big = _profile(cores="9-16", ram="32-64GiB", disk_free="64-256GiB")
    v = _verdicts(big, _bench())
    assert v["medium-cpu"][0] and v["public-node"][0] and v["router"][0]
    assert "can run small-cpu, medium-cpu" in v["public-node"][1]
    quick = _verdicts(big, _bench(quick=True))
    assert quick["medium-cpu"][0] and not quick["public-node"][0]
    assert quick["public-node"][1][0].startswith("the quick benchmark is for tests")


def test_gpu_profiles_follow_vram() -> None:
    one = _profile(
        cores="9-16",
        ram="64GiB+",
        disk_free="256GiB+",
        gpu="NVIDIA",
        gpu_count="1",
        vram="24-48GiB",
        vram_total="24-48GiB",
    )
    v = _verdicts(one, _bench())
    assert v["gpu-small"][0] and not v["gpu-large"][0]
    assert "VRAM (all GPUs) 24-48GiB is below 48-80GiB" in v["gpu-large"][1]
    two = _profile(
        cores="9-16",
        ram="64GiB+",
        disk_free="256GiB+",
        gpu="NVIDIA",
        gpu_count="2",
        vram="24-48GiB",
        vram_total="48-80GiB",
    )
    assert recommend(two, _bench()).recommended == ("gpu-large", "gpu-small", "medium-cpu", "small-cpu", MOCK)


def test_recommendation_json_shape() -> None:
    doc = recommend(_profile(), _bench()).to_dict()
    assert set(doc) == {"profiles", "roles", "recommended"}
    assert [p["name"] for p in doc["profiles"]] == [MOCK, "small-cpu", "medium-cpu", "gpu-small", "gpu-large"]
    assert [r["name"] for r in doc["roles"]] == ["public-node", "router"]
    for verdict in doc["profiles"] + doc["roles"]:
        assert set(verdict) == {"name", "description", "eligible", "reasons"} and verdict["reasons"]
