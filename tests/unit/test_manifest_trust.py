"""trust_from_manifest (the table in docs/manifests.md) and how observation takes over from it."""

from __future__ import annotations

import time

import pytest

from fedai.profile import bands
from fedai.protocol.messages import (
    BenchScores,
    Capacity,
    HardwareProfile,
    ModelInfo,
    NodeDescriptor,
    NodeManifest,
    Pricing,
)
from fedai_router.health import PRIOR_FAILURES, PRIOR_SUCCESSES
from fedai_router.index import NodeIndex
from fedai_router.manifests import MAX_TRUST, MIN_TRUST, trust_from_manifest
from fedai_router.node_state import DEFAULT_TRUST
from fedai_router.trust import OBSERVATION_HALF_WEIGHT


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


def _bench(
    cpu: float = 2e6, mem: float = 10_000, *, quick: bool = False, tflops: float | None = None, claimed: str = "high"
) -> BenchScores:
    return BenchScores(
        sha256_ops_s=cpu,
        memcpy_mib_s=mem,
        stride_mib_s=mem,
        cpu_band=claimed,
        memory_band=claimed,
        gpu_tflops=tflops,
        gpu_band=bands.gpu_band(tflops),
        quick=quick,
        duration_ms=900,
    )


def _trust(profile: HardwareProfile, bench: BenchScores | None) -> float:
    return trust_from_manifest(NodeManifest(profile=profile, bench=bench, created_at=1))


GPU = {"gpu": "NVIDIA", "gpu_count": "1", "vram": "24-48GiB", "vram_total": "24-48GiB"}


@pytest.mark.parametrize(
    ("profile", "bench", "expected"),
    [
        (_profile(), None, 0.5),  # a manifest with nothing to credit: the default
        (_profile(cores="3-4"), None, 0.52),
        (_profile(cores="17+", ram="64GiB+"), None, 0.66),  # hardware alone
        (_profile(), _bench(cpu=1e6, mem=3_000), 0.58),  # full bench passes (medium)
        (_profile(), _bench(), 0.62),  # … high on both
        (_profile(), _bench(cpu=100_000), 0.4),  # full bench, slow CPU
        (_profile(), _bench(quick=True), 0.5),  # quick bench: no credit
        (_profile(), _bench(cpu=100_000, quick=True), 0.5),  # … nor penalty
        (_profile(**GPU), _bench(), 0.62),  # a GPU claimed without GPU evidence earns nothing
        (_profile(**GPU), _bench(tflops=1.0), 0.62),  # … nor with a low GPU score
        (_profile(**GPU), _bench(tflops=50.0), 0.74),  # measured: GPU + VRAM credit
        (_profile(**{**GPU, "vram": "8-16GiB"}), _bench(tflops=50.0), 0.70),
        (_profile(), _bench(tflops=50.0), 0.62),  # a GPU score with no GPU in the profile: no credit
        (_profile(cores="17+", ram="64GiB+", **GPU), _bench(tflops=50.0), MAX_TRUST),  # capped
    ],
)
def test_trust_table(profile: HardwareProfile, bench: BenchScores | None, expected: float) -> None:
    assert _trust(profile, bench) == pytest.approx(expected)


def test_bench_bands_are_recomputed_not_believed() -> None:
    slow_but_claims_high = _bench(cpu=100_000, mem=500, claimed="high")
    assert _trust(_profile(), slow_but_claims_high) == pytest.approx(0.4)


def test_trust_stays_within_bounds() -> None:
    assert MIN_TRUST <= _trust(_profile(ram="<4GiB"), _bench(cpu=1, mem=1)) <= DEFAULT_TRUST
    assert _trust(_profile(cores="17+", ram="64GiB+", **GPU), _bench(tflops=1e6)) == MAX_TRUST <= 1.0


def _node_index(pubkey: str) -> NodeIndex:
    index = NodeIndex()
    descriptor = NodeDescriptor(
        endpoint="http://127.0.0.1:9",
        models=[ModelInfo(id="m", context_window=2048, max_tokens=256, pricing=Pricing(input_msat=1, output_msat=1))],
        capacity=Capacity(max_concurrent=4),
    )
    index.upsert(pubkey, descriptor, verified=True, heartbeat=True, seen=time.time())
    return index


def test_trust_moves_from_the_manifest_toward_observed_reliability() -> None:
    index = _node_index("aa" * 32)
    node = index.nodes["aa" * 32]
    assert node.trust == DEFAULT_TRUST
    index.set_manifest_trust(node, 0.8)
    assert node.trust == 0.8 and index.tables["m"].trust[0] == 0.8  # the scheduler sees it
    # a node whose manifest promised much but fails half its calls: trust falls toward its reliability
    seen: list[float] = []
    for i in range(200):
        if i % 2:
            index.failed(node, "upstream_error", now=0.0)
        else:
            index.succeeded(node, 10.0)
        seen.append(node.trust)
    reliability = node.health.reliability
    assert reliability < 0.6
    # after OBSERVATION_HALF_WEIGHT calls, the manifest and the observation weigh the same
    half = OBSERVATION_HALF_WEIGHT
    assert seen[half - 1] == pytest.approx((0.8 + node_rel(half // 2)) / 2)
    assert seen[-1] < seen[60] < seen[20] < 0.8
    assert abs(seen[-1] - reliability) < 0.03  # after 200 calls the manifest barely counts
    assert index.tables["m"].trust[0] == pytest.approx(seen[-1])


def node_rel(each: int) -> float:
    """Reliability after `each` successes and `each` failures (the Beta prior of fedai_router.health)."""
    return (each + PRIOR_SUCCESSES) / (2 * each + PRIOR_SUCCESSES + PRIOR_FAILURES)


def test_a_reliable_node_overtakes_a_weak_manifest() -> None:
    index = _node_index("bb" * 32)
    node = index.nodes["bb" * 32]
    index.set_manifest_trust(node, MIN_TRUST)
    for _ in range(200):
        index.succeeded(node, 5.0)
    assert node.trust > 0.9 > MIN_TRUST
