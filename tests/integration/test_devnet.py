"""`fedai devnet` as a real process: Postgres, relay, router and two nodes, then nothing left behind.

The nodes are mock nodes (FEDAI_DEVNET_RUNNER=mock in `marked_env`) except in the llama test, where they
share one real llama-server on the tiny model.

Every process the devnet starts inherits a unique marker in its environment, so the tests can find any
survivor by scanning /proc, whether or not the devnet recorded its pid.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc for leftover processes"),
]

FEDAI = [sys.executable, "-m", "fedai.cli.main"]
MARKER = "FEDAI_DEVNET_TEST_MARKER"


@pytest.fixture
def net_dir() -> Iterator[Path]:
    """The devnet's data dir outside pytest's base directory: as root the embedded server runs as another user,
    and a pytest session starting meanwhile (another checkout's) makes /tmp/pytest-of-root 0700 again."""
    with tempfile.TemporaryDirectory(prefix="fedai-devnet-") as path:
        yield Path(path) / "net"


def marked_env(marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "NODE_", "DATABASE_URL"))}
    env.pop("FEDAI_DATA_DIR", None)
    env[MARKER] = marker
    env["COLUMNS"] = "200"
    env["FEDAI_DEVNET_RUNNER"] = "mock"  # the devnet's default is llama; tests ask for it explicitly
    env.pop("FEDAI_DEVNET_MODEL", None)
    return env


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _cmdline_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def survivors(marker: str, pgdata: Path) -> list[str]:
    """Live processes carrying the marker, and any postgres serving `pgdata`."""
    found = []
    for pid in _pids():
        if pid == os.getpid() or not _running(pid):
            continue
        if _environ_has(pid, f"{MARKER}={marker}".encode()):
            found.append(f"{pid} (marked)")
        elif _cmdline_has(pid, b"postgres") and _cmdline_has(pid, str(pgdata).encode()):
            found.append(f"{pid} (postgres on {pgdata})")
    return found


def wait_until_gone(marker: str, pgdata: Path, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    left = survivors(marker, pgdata)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = survivors(marker, pgdata)
    return left


def fedai(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDAI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def check_devnet_file(data_dir: Path, nodes: int) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((data_dir / "devnet.json").read_text())
    assert info["relay_url"].startswith("ws://127.0.0.1:")
    assert info["database_url"].startswith("postgresql://")
    assert info["router"]["url"].startswith("http://127.0.0.1:")
    assert len(info["router"]["pubkey"]) == 64 and info["router"]["npub"].startswith("npub1")
    assert len(info["nodes"]) == nodes
    for node in info["nodes"]:
        assert node["url"].startswith("http://127.0.0.1:") and node["model"]
        assert len(node["pubkey"]) == 64 and node["npub"].startswith("npub1")
    assert len({n["pubkey"] for n in info["nodes"]}) == nodes
    client_key = Path(info["client_key_file"])
    assert stat.S_IMODE(client_key.stat().st_mode) == 0o600
    for key in (data_dir / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert {"relay", "router", "postgres", *(f"node-{i + 1}" for i in range(nodes))} <= set(info["pids"])
    logs = Path(info["logs_dir"])
    assert {p.name for p in logs.iterdir()} >= {"relay.log", "router.log", *(f"node-{i + 1}.log" for i in range(nodes))}
    return info


def test_devnet_demo_once_verifies_the_chain_and_leaves_nothing(net_dir: Path) -> None:
    data_dir = net_dir
    marker = uuid.uuid4().hex
    started = time.monotonic()
    proc = fedai("devnet", "--demo", "--once", "--data-dir", str(data_dir), env=marked_env(marker), timeout=150)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for text in (
        "verified chain",
        "client request",
        "router answer",
        "forwarded request",
        "node response",
        "node metering",
        "chain verified",
        "msat",
    ):
        assert text in out, text
    assert out.count("✓ signature") == 4
    info = check_devnet_file(data_dir, nodes=2)
    assert info["router"]["npub"][:13] in out
    assert any(node["npub"][:13] in out for node in info["nodes"]), "the serving node is named"
    for name, pid in info["pids"].items():
        assert not _running(pid), f"{name} (pid {pid}) still running"
    assert wait_until_gone(marker, data_dir / "pg", 0) == []
    print(f"fedai devnet --demo --once took {took:.1f} s")


def test_running_devnet_serves_infer_and_status_then_stops_on_sigint(tmp_path: Path, net_dir: Path) -> None:
    data_dir = net_dir
    marker = uuid.uuid4().hex
    env = marked_env(marker)
    out_path = tmp_path / "devnet.out"
    with out_path.open("w") as out:
        devnet = subprocess.Popen([*FEDAI, "devnet", "--data-dir", str(data_dir)], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while not (data_dir / "devnet.json").exists():
            assert devnet.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.1)
        info = check_devnet_file(data_dir, nodes=2)
        node_keys = {n["pubkey"] for n in info["nodes"]}

        client_env = {k: v for k, v in env.items() if k != MARKER}
        infer = fedai("infer", "--devnet", str(data_dir), "--json", "hello", env=client_env)
        assert infer.returncode == 0, infer.stderr
        chain = json.loads(infer.stdout)
        assert chain["verified"] is True
        assert chain["node"] in node_keys
        assert chain["router"] == info["router"]["pubkey"]
        assert chain["output"] and chain["metering"]["request"] == chain["events"]["forwarded"]
        assert chain["metering"]["price_msat"] > 0

        status = fedai("status", "--devnet", str(data_dir), "--json", env=client_env)
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["pubkey"] == info["router"]["pubkey"]
        assert document["view"] == "operator"  # the CLI found the devnet's operator token through devnet.json
        assert Path(info["admin_token_file"]).stat().st_mode & 0o077 == 0
        listed = {n["pubkey"]: n for n in document["nodes"]}
        assert node_keys <= set(listed)
        assert all(listed[key]["fresh"] for key in node_keys)

        second = fedai("devnet", "--once", "--data-dir", str(data_dir), env=client_env)
        assert second.returncode == 1
        assert "already running" in second.stderr

        assert devnet.poll() is None, "the devnet keeps running"
        devnet.send_signal(signal.SIGINT)
        assert devnet.wait(timeout=15) == 0, out_path.read_text()
        assert wait_until_gone(marker, data_dir / "pg", 15) == []
        for name, pid in info["pids"].items():
            assert not _running(pid), f"{name} (pid {pid}) still running"
        assert "SIGINT" in out_path.read_text()
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()


def test_devnet_on_llama_cpp_with_the_tiny_model(net_dir: Path, llama_server_bin: Path, tiny_model: Path) -> None:
    """`--runner llama`: one llama-server for both nodes (already built and cached by the fixtures)."""
    data_dir = net_dir
    marker = uuid.uuid4().hex
    started = time.monotonic()
    proc = fedai(
        "devnet",
        "--runner",
        "llama",
        "--model",
        "tiny",
        "--demo",
        "--once",
        "--data-dir",
        str(data_dir),
        env=marked_env(marker),
        timeout=150,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for text in ("llama.cpp", "fedai-tiny-llama", "What is 2+2?", "chain verified", "finish"):
        assert text in out, text
    assert out.count("✓ signature") == 4
    info = check_devnet_file(data_dir, nodes=2)
    assert info["runner"] == "llama"
    llama = info["llama"]
    assert llama["model"] == "fedai-tiny-llama" and llama["url"].startswith("http://127.0.0.1:")
    assert Path(llama["log"]) == data_dir / "logs" / "llama.log"
    assert str(tiny_model) in Path(llama["log"]).read_text(), "llama-server served the cached tiny model"
    assert all(node["model"] == "fedai-tiny-llama" for node in info["nodes"])
    assert "llama" in info["pids"]
    for name, pid in info["pids"].items():
        assert not _running(pid), f"{name} (pid {pid}) still running"
    assert wait_until_gone(marker, data_dir / "pg", 0) == []
    print(f"fedai devnet --runner llama --model tiny --demo --once took {took:.1f} s")


def test_devnet_mock_writes_no_llama_entry(net_dir: Path) -> None:
    data_dir = net_dir
    marker = uuid.uuid4().hex
    proc = fedai(
        "devnet",
        "--runner",
        "mock",
        "--nodes",
        "1",
        "--once",
        "--data-dir",
        str(data_dir),
        env=marked_env(marker),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = check_devnet_file(data_dir, nodes=1)
    assert info["runner"] == "mock" and info["llama"] is None
    assert "llama" not in info["pids"] and not (data_dir / "logs" / "llama.log").exists()
    assert wait_until_gone(marker, data_dir / "pg", 10) == []
