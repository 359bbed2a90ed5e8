"""POST /manifest: a node's signed manifest (kind 31024) sets the node's initial trust.

The node id is the signer: a manifest describes the key that signed it, so nobody can file one for another
node. `trust_from_manifest` (pure) turns the manifest's bands into a trust in 0..1; the router stores it in
`node_manifests` and every replica applies it on its next registry refresh. Observation then takes over
(`fedai_router.trust.effective_trust`). The table and its reasons are in docs/manifests.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from fedai.profile import bands
from fedai.profile.manifest import check_manifest_event
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, BenchScores, HardwareProfile, NodeManifest, to_builtins
from fedai_router.claims import Claims
from fedai_router.intake import Intake
from fedai_router.node_state import DEFAULT_TRUST
from fedai_router.registry import Registry
from fedai_router.store import manifests as manifest_store

MAX_MANIFEST_BYTES = 16 * 1024

# --- the trust table (pure) -----------------------------------------------------------------------------
# Everything in a manifest is self-reported, so its credit is small and capped; observed calls outweigh it
# after ~20 calls. Bench bands are recomputed here from the raw scores, never taken from the manifest.
MIN_TRUST = 0.35
MAX_TRUST = 0.85
CORE_CREDIT = {"1-2": 0.0, "3-4": 0.02, "5-8": 0.04, "9-16": 0.06, "17+": 0.08}
RAM_CREDIT = {"<4GiB": 0.0, "4-8GiB": 0.0, "8-16GiB": 0.02, "16-32GiB": 0.04, "32-64GiB": 0.06, "64GiB+": 0.08}
BENCH_PASS_CREDIT = 0.08  # full benchmark, CPU and memory both at least `medium`
BENCH_HIGH_CREDIT = 0.04  # … and both `high`
BENCH_LOW_PENALTY = -0.10  # full benchmark with CPU or memory `low`
GPU_CREDIT = 0.08  # a GPU in the profile AND a measured GPU score of at least `medium`
GPU_VRAM_CREDIT = 0.04  # … with at least 16-24GiB on its largest GPU
GPU_VRAM_MIN = "16-24GiB"


def _bench_credit(bench: BenchScores | None) -> float:
    if bench is None or bench.quick:  # the quick benchmark is for tests: no credit either way
        return 0.0
    levels = (bands.cpu_band(bench.sha256_ops_s), bands.memory_band(bench.memcpy_mib_s, bench.stride_mib_s))
    if "low" in levels:
        return BENCH_LOW_PENALTY
    return BENCH_PASS_CREDIT + (BENCH_HIGH_CREDIT if levels == ("high", "high") else 0.0)


def _gpu_credit(profile: HardwareProfile, bench: BenchScores | None) -> float:
    """GPU credit needs evidence: a full benchmark that actually ran on the GPU. A claim alone earns nothing."""
    if profile.gpu == "none" or bench is None or bench.quick or bench.gpu_tflops is None:
        return 0.0
    if not bands.at_least(bands.gpu_band(bench.gpu_tflops) or "low", "medium", bands.PERF):
        return 0.0
    return GPU_CREDIT + (GPU_VRAM_CREDIT if bands.at_least(profile.vram, GPU_VRAM_MIN, bands.VRAM) else 0.0)


def trust_from_manifest(manifest: NodeManifest) -> float:
    """Initial trust in 0..1 from a manifest's bands: DEFAULT_TRUST plus credits, clamped to the cap."""
    p, b = manifest.profile, manifest.bench
    trust = DEFAULT_TRUST + CORE_CREDIT.get(p.cores, 0.0) + RAM_CREDIT.get(p.ram, 0.0)
    trust += _bench_credit(b) + _gpu_credit(p, b)
    return round(min(MAX_TRUST, max(MIN_TRUST, trust)), 4)


# --- the endpoint ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifests:
    keys: Keys  # signs the ack
    intake: Intake
    claims: Claims
    pool: asyncpg.Pool  # node_manifests
    registry: Registry  # applies the trust at once when the node is known
    max_request_bytes: int
    skew_s: int

    async def handle(self, body: bytes) -> Event:
        max_bytes = min(self.max_request_bytes, MAX_MANIFEST_BYTES)
        opened = self.intake.open_addressed(body, NodeManifest, Kind.NODE_MANIFEST, max_bytes=max_bytes)
        event, manifest = opened.event, opened.payload
        check_manifest_event(event, manifest, skew_s=self.skew_s)
        stored = await manifest_store.stored_order(self.pool, event.pubkey)
        if stored is not None and stored[1] == event.id:
            raise FedaiError(ErrorCode.REPLAY, "this manifest was already accepted")
        if not manifest_store.supersedes(event.created_at, event.id, stored):
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a newer manifest is already stored for this node")
        await self.claims.claim(event)
        trust = trust_from_manifest(manifest)
        if not await manifest_store.upsert_manifest(self.pool, event, to_builtins(manifest), trust):
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a newer manifest is already stored for this node")
        known = self.registry.apply_manifest(event.pubkey, trust)
        detail = f"trust={trust:.4f}" + ("" if known else "; applies when the node registers")
        return seal(self.keys, Kind.ACK, Ack(status="ok", detail=detail), to=event.pubkey, reply_to=event.id)
