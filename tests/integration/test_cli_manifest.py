"""`fedai manifest --router` against a real in-process router: signed, sent, acknowledged, applied."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result

from fedai.cli.keyfile import write_secret_file
from fedai.cli.main import cli
from fedai.profile.manifest import D_TAG
from fedai.protocol.envelope import open_envelope
from fedai.protocol.keys import Keys, npub
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, NodeManifest, Pricing
from fedai_router.manifests import trust_from_manifest
from tests.support.fake_node import register
from tests.support.router import RunningRouter


async def _run(args: list[str]) -> Result:
    """The CLI is synchronous; the router runs in this event loop, so the CLI runs in a thread."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args)


def _key_file(tmp_path: Path, keys: Keys) -> str:
    path = tmp_path / "node.key"
    write_secret_file(path, keys)
    return str(path)


async def test_manifest_sent_to_a_router(router: RunningRouter, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    node = Keys.generate()
    descriptor = NodeDescriptor(
        endpoint="http://127.0.0.1:9",
        models=[ModelInfo(id="m1", context_window=2048, max_tokens=512, pricing=Pricing(input_msat=1, output_msat=1))],
        capacity=Capacity(max_concurrent=2),
    )
    assert (await register(router.url, router.pubkey, node, descriptor)).status_code == 200
    out = tmp_path / "manifest.json"
    result = await _run(
        [
            "manifest",
            "--key",
            _key_file(tmp_path, node),
            "--quick",
            "--router",
            router.url,
            "--router-pubkey",
            npub(router.pubkey),
            "--write",
            str(out),
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    event = doc["event"]
    # the written file is the event that was sent: addressed to the router, signed by the node
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    opened = open_envelope(out.read_bytes(), NodeManifest, kinds=(Kind.NODE_MANIFEST,), recipient=router.pubkey)
    assert opened.event.to_dict() == event and opened.event.pubkey == node.pubkey
    assert opened.event.tag_values("d") == [D_TAG]
    # the router's signed answer, verified by the CLI, and the trust it applied
    expected = trust_from_manifest(opened.payload)
    answer = doc["router"]
    assert answer["pubkey"] == router.pubkey and answer["status"] == "ok"
    assert answer["trust"] == pytest.approx(expected) and answer["ack"]["tags"][1] == ["e", event["id"]]
    assert router.service.registry.nodes[node.pubkey].manifest_trust == pytest.approx(expected)
    stored = await db_pool.fetchval("SELECT event_id FROM node_manifests WHERE pubkey = $1", node.pubkey)
    assert stored == event["id"]


async def test_manifest_router_key_from_health_and_human_output(router: RunningRouter, tmp_path: Path) -> None:
    node = Keys.generate()
    result = await _run(["manifest", "--key", _key_file(tmp_path, node), "--quick", "--router", router.url])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "accepted it: trust=" in text and "applies when the node registers" in text
    assert node.pubkey in router.service.registry.manifest_trust


async def test_manifest_refused_by_the_router_reports_the_code(router: RunningRouter, tmp_path: Path) -> None:
    wrong_router = Keys.generate().pubkey  # signed for another router: this one refuses it
    result = await _run(
        [
            "manifest",
            "--key",
            _key_file(tmp_path, Keys.generate()),
            "--quick",
            "--router",
            router.url,
            "--router-pubkey",
            wrong_router,
            "--json",
        ]
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "wrong_recipient"
