"""`fedai relay|router|migrate` as real processes: readiness, signal forwarding, exit statuses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_devnet import FEDAI

pytestmark = pytest.mark.integration


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "NODE_", "DATABASE_URL"))}


def test_relay_runs_until_sigterm_is_forwarded(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    with log.open("w") as out:
        relay = subprocess.Popen([*FEDAI, "relay", "--port", "0"], env=clean_env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not re.search(r"relay listening on ws://127\.0\.0\.1:\d+", log.read_text()):
            assert relay.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=10) == 0, log.read_text()
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()


def test_router_without_a_key_exits_with_the_config_error() -> None:
    proc = subprocess.run([*FEDAI, "router"], env=clean_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "config error: ROUTER_PRIVATE_KEY is required" in proc.stderr


def test_node_flags_reach_the_node_config() -> None:
    proc = subprocess.run(
        [*FEDAI, "node", "--runner", "nope"], env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "config error: NODE_PRIVATE_KEY is required" in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks /proc for a leftover postgres")
def test_migrate_embedded_is_idempotent_and_stops_its_server(tmp_path: Path) -> None:
    env = clean_env()
    env.pop("FEDAI_DATA_DIR", None)
    args = [*FEDAI, "migrate", "--data-dir", str(tmp_path), "--json"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    applied = json.loads(first.stdout)["applied"]
    assert applied and all(name.endswith(".sql") for name in applied)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["applied"] == []
    pgdata = str(tmp_path / "pg").encode()
    deadline = time.monotonic() + 10  # the server's last processes may take a moment to be reaped
    while left := _postgres_pids(pgdata):
        assert time.monotonic() < deadline, f"postgres left running: pids {left}"
        time.sleep(0.1)


def _postgres_pids(pgdata: bytes) -> list[str]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"postgres" in cmdline and pgdata in cmdline:
                pids.append(proc.name)
    return pids


def test_migrate_reports_an_unreachable_server() -> None:
    proc = subprocess.run(
        [*FEDAI, "migrate", "--database-url", "postgresql://nobody:pw@127.0.0.1:1/x"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: migration failed:")
    assert ":pw@" not in proc.stderr
