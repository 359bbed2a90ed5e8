"""`fedai devnet` when something goes wrong: name the process, show its log, stop everything, exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_devnet import FEDAI, _running, fedai, marked_env, wait_until_gone

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc for leftover processes"),
]


def test_a_node_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "net"
    marker = uuid.uuid4().hex
    proc = fedai(
        "devnet",
        "--once",
        "--runner",
        "no-such-runner",
        "--data-dir",
        str(data_dir),
        env=marked_env(marker),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "node-1" in proc.stderr and "exited with status 2" in proc.stderr
    assert "NODE_RUNNER" in proc.stderr, "the tail of the node's log explains why"
    assert not (data_dir / "devnet.json").exists()
    assert wait_until_gone(marker, data_dir / "pg", 10) == []


def test_a_child_dying_later_stops_the_devnet(tmp_path: Path) -> None:
    data_dir = tmp_path / "net"
    marker = uuid.uuid4().hex
    out_path = tmp_path / "devnet.out"
    with out_path.open("w") as out:
        devnet = subprocess.Popen(
            [*FEDAI, "devnet", "--nodes", "1", "--data-dir", str(data_dir)],
            env=marked_env(marker),
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 90
        while not (data_dir / "devnet.json").exists():
            assert devnet.poll() is None and time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.1)
        pids = json.loads((data_dir / "devnet.json").read_text())["pids"]
        os.kill(pids["node-1"], signal.SIGKILL)
        assert devnet.wait(timeout=20) == 1
        text = out_path.read_text()
        assert "node-1 killed by SIGKILL" in text
        assert wait_until_gone(marker, data_dir / "pg", 10) == []
        assert not any(_running(pid) for pid in pids.values())
    finally:
        if devnet.poll() is None:
            devnet.send_signal(signal.SIGKILL)
            devnet.wait()


def test_a_corrupt_key_file_stops_everything_started_so_far(tmp_path: Path) -> None:
    data_dir = tmp_path / "net"
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "router.key").write_text("not-a-key\n")
    marker = uuid.uuid4().hex
    proc = fedai("devnet", "--once", "--data-dir", str(data_dir), env=marked_env(marker), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "router.key is not a secret key" in proc.stderr
    assert "not-a-key" not in proc.stderr + proc.stdout
    assert wait_until_gone(marker, data_dir / "pg", 10) == []
