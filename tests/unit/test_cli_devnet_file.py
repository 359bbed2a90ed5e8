"""devnet.json: the round trip, where it is looked for, and clear errors for missing or broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedai.cli.devnet_file import (
    DevnetFileError,
    DevnetInfo,
    NodeEntry,
    RouterEntry,
    default_devnet,
    devnet_path,
    read_devnet,
    write_devnet,
)
from fedai.protocol.keys import Keys


def sample(tmp_path: Path) -> DevnetInfo:
    router, node = Keys.generate(), Keys.generate()
    return DevnetInfo(
        relay_url="ws://127.0.0.1:7777",
        database_url="postgresql://postgres:@/postgres?host=/tmp/x/pg",
        router=RouterEntry(url="http://127.0.0.1:8080", pubkey=router.pubkey, npub=router.npub),
        nodes=[NodeEntry(url="http://127.0.0.1:8090", pubkey=node.pubkey, npub=node.npub, model="fedai-mock-1")],
        client_key_file=str(tmp_path / "keys" / "client.key"),
        logs_dir=str(tmp_path / "logs"),
        pids={"devnet": 10, "relay": 11, "router": 12, "node-1": 13},
        data_dir=str(tmp_path),
        started_at=1.5,
    )


def test_round_trip(tmp_path: Path) -> None:
    info = sample(tmp_path)
    path = write_devnet(tmp_path, info)
    assert path == tmp_path / "devnet.json"
    assert read_devnet(tmp_path) == info
    assert read_devnet(path) == info


def test_file_has_the_documented_fields(tmp_path: Path) -> None:
    write_devnet(tmp_path, sample(tmp_path))
    document = json.loads((tmp_path / "devnet.json").read_text())
    assert {"relay_url", "database_url", "router", "nodes", "client_key_file", "logs_dir", "pids"} <= set(document)
    assert set(document["router"]) == {"url", "pubkey", "npub"}
    assert set(document["nodes"][0]) == {"url", "pubkey", "npub", "model"}
    assert not list(tmp_path.glob(".devnet-*")), "temporary file left behind"


def test_rewrite_replaces_the_file(tmp_path: Path) -> None:
    info = sample(tmp_path)
    write_devnet(tmp_path, info)
    second = sample(tmp_path)
    write_devnet(tmp_path, second)
    assert read_devnet(tmp_path) == second != info


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DevnetFileError, match=r"devnet\.json not found"):
        read_devnet(tmp_path)


@pytest.mark.parametrize("content", ["{", "[]", '{"relay_url": "ws://x"}', '{"relay_url": 5}'])
def test_malformed_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "devnet.json").write_text(content)
    with pytest.raises(DevnetFileError, match="not a valid devnet file"):
        read_devnet(tmp_path)


def test_devnet_path_accepts_dir_or_file(tmp_path: Path) -> None:
    assert devnet_path(tmp_path) == tmp_path / "devnet.json"
    assert devnet_path(tmp_path / "other.json") == tmp_path / "other.json"
    assert devnet_path(tmp_path / "not-yet-created") == tmp_path / "not-yet-created" / "devnet.json"


def test_default_devnet_follows_fedai_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDAI_DATA_DIR", str(tmp_path))
    assert default_devnet() is None
    write_devnet(tmp_path, sample(tmp_path))
    assert default_devnet() == tmp_path / "devnet.json"


def test_default_devnet_is_dot_fedai_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDAI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_devnet() is None
    write_devnet(tmp_path / ".fedai", sample(tmp_path))
    assert default_devnet() == Path(".fedai") / "devnet.json"
