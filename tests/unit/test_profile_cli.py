"""`fedai profile|bench|recommend|manifest` without a router: JSON shapes, tables, the written file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedai.cli.keyfile import write_secret_file
from fedai.cli.main import cli
from fedai.profile import bands
from fedai.profile.manifest import D_TAG
from fedai.protocol.envelope import open_envelope
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeManifest

PROFILE_KEYS = {"os", "arch", "cpu", "cores", "ram", "disk_free", "gpu", "gpu_count", "vram", "vram_total"}
BENCH_KEYS = {
    "sha256_ops_s",
    "memcpy_mib_s",
    "stride_mib_s",
    "cpu_band",
    "memory_band",
    "gpu_tflops",
    "gpu_band",
    "quick",
    "duration_ms",
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NODE_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("FEDAI_DATA_DIR", raising=False)


def _json(args: list[str]) -> dict[str, object]:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_profile_json_has_every_band() -> None:
    doc = _json(["profile", "--json"])
    assert set(doc) == PROFILE_KEYS
    assert doc["cores"] in bands.CORES and doc["ram"] in bands.RAM and doc["gpu_count"] in bands.GPU_COUNT


def test_profile_table_for_people() -> None:
    result = CliRunner().invoke(cli, ["profile"])
    assert result.exit_code == 0 and "hardware profile" in result.stdout and "disk_free" in result.stdout


def test_bench_quick_json() -> None:
    doc = _json(["bench", "--quick", "--json"])
    assert set(doc) == BENCH_KEYS and doc["quick"] is True
    assert doc["cpu_band"] in bands.PERF and doc["memory_band"] in bands.PERF
    assert isinstance(doc["sha256_ops_s"], float) and doc["sha256_ops_s"] > 0


def test_recommend_json() -> None:
    doc = _json(["recommend", "--quick", "--json"])
    assert set(doc) == {"profile", "bench", "profiles", "roles", "recommended"}
    assert isinstance(doc["recommended"], list) and "mock/demo" in doc["recommended"]
    assert isinstance(doc["roles"], list) and {r["name"] for r in doc["roles"]} == {"public-node", "router"}


def test_recommend_table() -> None:
    result = CliRunner().invoke(cli, ["recommend", "--quick"])
    assert result.exit_code == 0 and "small-cpu" in result.stdout and "recommended:" in result.stdout


def test_manifest_write_signs_with_the_node_key(tmp_path: Path) -> None:
    keys = Keys.generate()
    key_file = tmp_path / "node.key"
    write_secret_file(key_file, keys)
    out = tmp_path / "manifest.json"
    doc = _json(["manifest", "--key", str(key_file), "--quick", "--write", str(out), "--json"])
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    opened = open_envelope(out.read_bytes(), NodeManifest, kinds=(Kind.NODE_MANIFEST,))
    assert opened.event.pubkey == keys.pubkey and opened.event.tag_values("d") == [D_TAG]
    assert opened.event.tag_values("p") == []  # no router: publishable on relays
    assert doc["event"] == opened.event.to_dict() and doc["written"] == str(out)
    assert doc["manifest"] == json.loads(opened.event.content)
    assert "router" not in doc


def test_manifest_human_output_never_prints_the_secret(tmp_path: Path) -> None:
    keys = Keys.generate()
    result = CliRunner().invoke(cli, ["manifest", "--key", keys.secret_hex, "--quick"])
    assert result.exit_code == 0, result.output
    assert "signed node.manifest" in result.stdout and keys.secret_hex not in result.output


def test_manifest_argument_errors() -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["manifest", "--quick"])
    assert missing.exit_code == 2 and "--key" in missing.output
    bad = runner.invoke(cli, ["manifest", "--key", "not-a-key", "--quick"])
    assert bad.exit_code == 2 and "not a secret key" in bad.output
    orphan = runner.invoke(cli, ["manifest", "--key", Keys.generate().secret_hex, "--router-pubkey", "ab" * 32])
    assert orphan.exit_code == 2 and "--router-pubkey needs --router" in orphan.output


def test_manifest_unreachable_router_is_a_typed_error() -> None:
    result = CliRunner().invoke(
        cli, ["manifest", "--key", Keys.generate().secret_hex, "--quick", "--router", "http://127.0.0.1:9", "--json"]
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "upstream_error"
