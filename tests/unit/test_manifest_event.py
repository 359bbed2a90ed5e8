"""fedai.profile.manifest: the NodeManifest payload and the kind-31024 event that carries it."""

from __future__ import annotations

import time

import msgspec
import pytest

from fedai import __version__
from fedai.profile.manifest import D_TAG, build_manifest_event, check_manifest_event, collect, make_manifest
from fedai.protocol.envelope import open_envelope
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind, is_addressable
from fedai.protocol.messages import BenchScores, HardwareProfile, NodeManifest, decode_payload, encode_payload

PROFILE = HardwareProfile(os="linux", arch="x86_64", cpu="AMD EPYC", cores="1-2", ram="16-32GiB", disk_free="64-256GiB")
BENCH = BenchScores(
    sha256_ops_s=2.5e6, memcpy_mib_s=12_000, stride_mib_s=9_000, cpu_band="high", memory_band="high", duration_ms=870.0
)


def test_kind_is_addressable() -> None:
    assert Kind.NODE_MANIFEST == 31024 and is_addressable(Kind.NODE_MANIFEST)


def test_make_manifest_derives_recommendations() -> None:
    manifest = make_manifest(PROFILE, BENCH, created_at=1_800_000_000)
    assert manifest.recommended == ["small-cpu", "mock/demo"]
    assert manifest.software_version == __version__ and manifest.created_at == 1_800_000_000
    assert decode_payload(encode_payload(manifest), NodeManifest) == manifest


def test_event_for_a_router_is_an_addressed_envelope() -> None:
    node, router = Keys.generate(), Keys.generate()
    event = build_manifest_event(node, make_manifest(PROFILE, BENCH), to=router.pubkey)
    verify_event(event)
    assert event.kind == Kind.NODE_MANIFEST and event.pubkey == node.pubkey
    assert event.tag_values("d") == [D_TAG] and event.tag_values("p") == [router.pubkey]
    assert len(event.tag_values("nonce")) == 1
    opened = open_envelope(event.to_json(), NodeManifest, kinds=(Kind.NODE_MANIFEST,), recipient=router.pubkey)
    check_manifest_event(opened.event, opened.payload, skew_s=60)
    assert opened.payload.profile == PROFILE


def test_event_for_relays_has_no_recipient() -> None:
    event = build_manifest_event(Keys.generate(), make_manifest(PROFILE, None))
    assert event.tag_values("p") == [] and event.tag_values("nonce") == []
    assert event.tag_values("d") == [D_TAG] and event.tag_values("t") == ["fedai"]


def test_d_tag_and_measurement_time_are_checked() -> None:
    keys = Keys.generate()
    manifest = make_manifest(PROFILE, BENCH)
    event = build_manifest_event(keys, manifest)
    for tags in ([], [["d", "other"]], [["d", D_TAG], ["d", D_TAG]]):
        with pytest.raises(FedaiError) as err:
            check_manifest_event(msgspec.structs.replace(event, tags=tags), manifest, skew_s=60)
        assert err.value.code is ErrorCode.INVALID_EVENT
    future = msgspec.structs.replace(manifest, created_at=int(time.time()) + 3600)
    with pytest.raises(FedaiError) as err:
        check_manifest_event(build_manifest_event(keys, future), future, skew_s=60)
    assert err.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "content",
    [
        '{"profile": {"os": "linux"}, "created_at": 1}',  # missing bands
        '{"created_at": 1}',
        '{"profile": {"os":"linux","arch":"x","cpu":"c","cores":"1-2","ram":"r","disk_free":"d"}}',  # no created_at
        # a band is a short token, not free text (no way to smuggle a hostname or serial in with punctuation)
        '{"profile": {"os":"linux","arch":"x","cpu":"host;name@example","cores":"1-2","ram":"r","disk_free":"d"},'
        ' "created_at": 1}',
        '{"profile": {"os":"linux","arch":"x","cpu":"' + "A" * 41 + '","cores":"1","ram":"r","disk_free":"d"},'
        ' "created_at": 1}',
        '{"profile": {"os":"linux","arch":"x","cpu":"c","cores":"1-2","ram":"r","disk_free":"d"}, "created_at": 1,'
        ' "bench": {"sha256_ops_s": -1, "memcpy_mib_s": 1, "stride_mib_s": 1, "cpu_band": "low",'
        ' "memory_band": "low", "duration_ms": 1}}',
        '{"profile": {"os":"linux","arch":"x","cpu":"c","cores":"1-2","ram":"r","disk_free":"d"}, "created_at": 1,'
        ' "recommended": [' + ",".join(['"x"'] * 33) + "]}",
    ],
)
def test_malformed_manifests_are_invalid_events(content: str) -> None:
    with pytest.raises(FedaiError) as err:
        decode_payload(content, NodeManifest)
    assert err.value.code is ErrorCode.INVALID_EVENT


def test_collect_measures_this_machine() -> None:
    manifest = collect(quick=True)
    assert manifest.bench is not None and manifest.bench.quick
    assert "mock/demo" in manifest.recommended
    assert abs(manifest.created_at - time.time()) < 30
