"""Node manifests: profile + benchmark + recommendation, signed by the node's key as kind 31024.

The event is addressable (`d` = `fedai-manifest`), so it can be published on relays as is; sent to a
router's `POST /manifest` it also carries `p` (the router) and a `nonce`. The subject of a manifest is its
signer: there is no field naming the node, so a manifest about another key cannot be made.
"""

from __future__ import annotations

import time
from pathlib import Path

from fedai import __version__
from fedai.profile import benchmark, hardware
from fedai.profile.recommend import recommend
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import BenchScores, HardwareProfile, NodeManifest

D_TAG = "fedai-manifest"


def make_manifest(
    profile: HardwareProfile, bench: BenchScores | None, *, created_at: int | None = None
) -> NodeManifest:
    """A manifest from measurements already taken; `recommended` is derived from them."""
    return NodeManifest(
        profile=profile,
        bench=bench,
        recommended=list(recommend(profile, bench).recommended),
        software_version=__version__,
        created_at=int(time.time()) if created_at is None else created_at,
    )


def collect(data_dir: Path = Path(".fedai"), *, quick: bool = False) -> NodeManifest:
    """Profile this machine, run the benchmark, and build its manifest."""
    return make_manifest(hardware.profile(data_dir), benchmark.run(quick=quick))


def build_manifest_event(
    keys: Keys, manifest: NodeManifest, to: str | None = None, *, created_at: int | None = None
) -> Event:
    """Sign `manifest` as a node.manifest event; `to` (a router's pubkey) adds `p` and a nonce."""
    return seal(
        keys,
        Kind.NODE_MANIFEST,
        manifest,
        to=to,
        nonce=to is not None,
        extra_tags=(["d", D_TAG], ["t", "fedai"]),
        created_at=created_at,
    )


def check_manifest_event(event: Event, manifest: NodeManifest, *, skew_s: int) -> None:
    """Rules beyond the envelope's: exactly one `d` tag, `fedai-manifest`; measured no later than signed."""
    if event.tag_values("d") != [D_TAG]:
        raise FedaiError(ErrorCode.INVALID_EVENT, f"a node manifest needs exactly one d tag, {D_TAG!r}")
    if manifest.created_at > event.created_at + skew_s:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "manifest created_at is after the event's created_at")
