"""`fedai router` and `fedai node` run by hand as real processes, as README "Running your own router or node"
says: the node registered on loopback, the refusal that says why without ROUTER_ALLOW_PRIVATE_ENDPOINTS, a
database that cannot be used as one `config error` line, and stops on SIGTERM, SIGINT and SIGHUP that leave
no process behind (the embedded PostgreSQL included).

The nodes use the mock runner (`NODE_RUNNER=mock`): no model, canned answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedai.cli.postgres import is_postmaster, postmaster_pid, stop_postgres
from fedai.protocol.keys import Keys
from tests.integration.test_devnet import FEDAI, marked_env, survivors, wait_until_gone
from tests.support import database
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LISTENING = re.compile(r"(router|node) listening on (http://127\.0\.0\.1:\d+) \(pubkey (npub1[0-9a-z]+)\)")
START_TIMEOUT_S = 120.0  # an embedded PostgreSQL's first start (initdb) on a loaded machine


@dataclass
class Service:
    """`fedai router` or `fedai node` started by the test, its stdout and stderr in one log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], count: int = 1, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """The `count`-th match of `pattern` in the log, once there."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(pattern.finditer(self.text()))
            if len(matches) >= count:
                return matches[count - 1]
            assert self.popen.poll() is None, f"exited {self.popen.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} ×{count}:\n{self.text()}"
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> int:
        self.popen.send_signal(sig)
        return self.popen.wait(timeout=60)

    def messages(self) -> list[str]:
        """The `msg` of every JSON log line."""
        found = []
        for line in self.text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append(str(entry.get("msg")))
        return found

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def start(name: str, log_dir: Path, env: dict[str, str], *args: str) -> Service:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([*FEDAI, *args], env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    return Service(popen, log)


def fedai(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDAI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def key_file(path: Path, env: dict[str, str]) -> str:
    """`fedai keys gen --out PATH`, as the README does; the file's content (what `$(cat PATH)` gives)."""
    made = fedai("keys", "gen", "--out", str(path), env=env)
    assert made.returncode == 0, made.stderr
    return path.read_text().strip()


def router_env(base: dict[str, str], secret: str, dsn: str, **extra: str) -> dict[str, str]:
    return {**base, "ROUTER_PRIVATE_KEY": secret, "DATABASE_URL": dsn, "ROUTER_PORT": "0", **extra}


def node_env(
    base: dict[str, str], secret: str, router_url: str, router_npub: str, port: int, beat_ms: int
) -> dict[str, str]:
    return {
        **base,
        "NODE_PRIVATE_KEY": secret,
        "ROUTER_ENDPOINT": router_url,
        "ROUTER_PUBLIC_KEY": router_npub,
        "NODE_ENDPOINT": f"http://127.0.0.1:{port}",
        "NODE_PORT": str(port),
        "NODE_RUNNER": "mock",
        "NODE_HEARTBEAT_MS": str(beat_ms),
    }


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new migrated database (tests.support.database), for a router run as a process."""
    manager = database.test_database()
    with asyncio.Runner() as runner:  # one loop: the context manager is a generator suspended in between
        dsn = runner.run(manager.__aenter__())
        try:
            yield dsn
        finally:
            runner.run(manager.__aexit__(None, None, None))


def public_status(router_url: str, env: dict[str, str]) -> dict[str, Any]:
    shown = fedai("status", "--router", router_url, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    document: dict[str, Any] = json.loads(shown.stdout)
    return document


def test_router_and_node_by_hand_on_loopback_register_and_serve(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = marked_env(marker)
    router_secret = key_file(tmp_path / "router.key", env)
    node_secret = key_file(tmp_path / "node.key", env)
    with fresh_database() as dsn:
        router = start(
            "router", tmp_path, router_env(env, router_secret, dsn, ROUTER_ALLOW_PRIVATE_ENDPOINTS="true"), "router"
        )
        node: Service | None = None
        try:
            _, router_url, router_npub = router.wait_for(LISTENING).groups()
            assert router_npub == Keys.parse(router_secret).npub
            port = free_port()
            node = start("node", tmp_path, node_env(env, node_secret, router_url, router_npub, port, 500), "node")
            assert node.wait_for(LISTENING).group(2) == f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while (status := public_status(router_url, env))["nodes"]["fresh"] != 1:
                assert time.monotonic() < deadline, f"{status}\n{node.text()}\n{router.text()}"
                time.sleep(0.5)
            answer = fedai("infer", "--router", router_url, "--router-pubkey", router_npub, "--json", "hello", env=env)
            assert answer.returncode == 0, answer.stderr
            chain = json.loads(answer.stdout)
            assert chain["verified"] is True and chain["node"] == Keys.parse(node_secret).pubkey
            assert not any("heartbeat refused" in line for line in node.messages())

            assert node.stop(signal.SIGINT) == 0, node.text()
            assert router.stop(signal.SIGTERM) == 0, router.text()
            assert node.messages()[-1] == "node stopped (SIGINT)"
            assert router.messages()[-1] == "router stopped (SIGTERM)"
            assert "Traceback" not in node.text() + router.text()
            assert wait_until_gone(marker, tmp_path / "no-embedded-pg", 10) == []  # CLIs and services alike
        finally:
            for service in (node, router):
                if service is not None:
                    service.kill()


def test_a_loopback_node_is_refused_with_the_reason_on_both_sides(tmp_path: Path) -> None:
    env = marked_env(uuid.uuid4().hex)
    router_keys, node_keys = Keys.generate(), Keys.generate()
    with fresh_database() as dsn:
        router = start("router", tmp_path, router_env(env, router_keys.secret_hex, dsn), "router")
        node: Service | None = None
        try:
            router_url = router.wait_for(LISTENING).group(2)
            port = free_port()
            node = start(
                "node", tmp_path, node_env(env, node_keys.secret_hex, router_url, router_keys.npub, port, 200), "node"
            )
            refused = re.compile(r"heartbeat refused by (\S+): (endpoint [^\"]+)")
            match = node.wait_for(refused, count=3)
            assert match.group(1) == router_url
            assert match.group(2) == (
                f"endpoint http://127.0.0.1:{port} is a loopback address; "
                "set ROUTER_ALLOW_PRIVATE_ENDPOINTS=true on the router for local testing or a private network"
            )
            # the router says it too, once for this node however often it beats
            logged = [m for m in router.messages() if m.startswith("heartbeat refused:")]
            assert logged == [f"heartbeat refused: {match.group(2)}"], router.text()
            assert node_keys.pubkey in router.text() and node_keys.secret_hex not in router.text()
            assert public_status(router_url, env)["nodes"]["fresh"] == 0
        finally:
            for service in (node, router):
                if service is not None:
                    service.kill()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """FEDAI_DATA_DIR outside pytest's base directory: as root the embedded server runs as another user, and a
    pytest session starting meanwhile (another checkout's) makes /tmp/pytest-of-root 0700 again."""
    with tempfile.TemporaryDirectory(prefix="fedai-stop-") as path:
        try:
            yield Path(path) / "data"
        finally:
            stop_postgres(Path(path) / "data" / "pg")  # what a failed test left running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_router_on_the_embedded_postgres_leaves_nothing_running(
    tmp_path: Path, data_dir: Path, sig: signal.Signals
) -> None:
    marker = uuid.uuid4().hex
    env = {**marked_env(marker), "ROUTER_PRIVATE_KEY": Keys.generate().secret_hex, "ROUTER_PORT": "0"}
    env["FEDAI_DATA_DIR"] = str(data_dir)
    router = start("router", tmp_path, env, "router")
    try:
        router.wait_for(LISTENING)
        pgdata = data_dir / "pg"
        postmaster = postmaster_pid(pgdata)
        assert postmaster is not None and is_postmaster(postmaster, pgdata)
        running = survivors(marker, pgdata)
        assert f"{postmaster} (marked)" in running and len(running) >= 3, running  # the CLI, its router, postgres
        assert router.stop(sig) == 0, router.text()
        assert router.messages()[-2:] == ["embedded PostgreSQL stopped", f"router stopped ({sig.name})"]
        assert "Traceback" not in router.text()
        assert wait_until_gone(marker, pgdata, 15) == []
        assert not is_postmaster(postmaster, pgdata)
    finally:
        router.kill()


def test_an_unreachable_database_is_one_config_error_naming_the_variable() -> None:
    env = {**marked_env(uuid.uuid4().hex), "ROUTER_PRIVATE_KEY": Keys.generate().secret_hex}
    env["ROUTER_DB_URL"] = f"postgresql://fedai:hunter2@127.0.0.1:{free_port()}/fedai"
    env["DATABASE_URL"] = "postgresql://ignored@127.0.0.1:1/x"  # ROUTER_DB_URL wins, and is the one named
    proc = fedai("router", env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: ROUTER_DB_URL: cannot use postgresql://fedai:***@127.0.0.1:"), lines
    assert "refused" in lines[0].lower()
    assert "hunter2" not in proc.stderr


def test_a_node_with_an_unreachable_replay_store_is_one_config_error() -> None:
    env = node_env(
        marked_env(uuid.uuid4().hex),
        Keys.generate().secret_hex,
        f"http://127.0.0.1:{free_port()}",
        Keys.generate().npub,
        free_port(),
        1000,
    )
    env["NODE_DB_URL"] = f"postgresql://node:hunter2@127.0.0.1:{free_port()}/replay"
    proc = fedai("node", env=env)
    assert proc.returncode == 2, proc.stderr
    config_lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]  # JSON: the node's log
    assert len(config_lines) == 1, proc.stderr
    assert config_lines[0].startswith("config error: NODE_DB_URL: cannot use postgresql://node:***@127.0.0.1:")
    assert "hunter2" not in proc.stderr


@pytest.mark.skipif(
    not os.environ.get("FEDAI_TEST_DATABASE_URL"), reason="needs a server to ask for a missing database"
)
def test_a_missing_database_is_one_config_error_naming_the_variable() -> None:
    base = os.environ["FEDAI_TEST_DATABASE_URL"].rsplit("/", 1)[0]
    env = {**marked_env(uuid.uuid4().hex), "ROUTER_PRIVATE_KEY": Keys.generate().secret_hex}
    env["DATABASE_URL"] = f"{base}/fedai_missing_{uuid.uuid4().hex[:8]}"
    proc = fedai("router", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: DATABASE_URL: cannot use "), lines
    assert lines[0].endswith("does not exist"), lines


def test_a_node_stopped_by_sighup_says_so_in_one_line(tmp_path: Path) -> None:
    """A node with no router to reach (none listens on ROUTER_ENDPOINT) still starts, and stops on SIGHUP."""
    env = node_env(
        marked_env(uuid.uuid4().hex),
        Keys.generate().secret_hex,
        f"http://127.0.0.1:{free_port()}",
        Keys.generate().npub,
        free_port(),
        1000,
    )
    node = start("node", tmp_path, env, "node")
    try:
        node.wait_for(LISTENING)
        assert node.stop(signal.SIGHUP) == 0, node.text()
        assert node.messages()[-1] == "node stopped (SIGHUP)"
        assert "Traceback" not in node.text()
    finally:
        node.kill()


def _drain(fd: int, into: bytearray) -> None:
    """Read what the terminal shows (a full pty would block the devnet's writes)."""
    while select.select([fd], [], [], 0.1)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into += chunk


def test_devnet_stops_everything_when_its_terminal_closes(data_dir: Path) -> None:
    """Closing the terminal: writes to it fail (EIO) and its job gets SIGHUP; the devnet still stops all it
    started (a failed "stopping…" line once kept it from stopping its PostgreSQL)."""
    marker = uuid.uuid4().hex
    master, terminal = pty.openpty()
    devnet = subprocess.Popen(
        [*FEDAI, "devnet", "--data-dir", str(data_dir)],
        env=marked_env(marker),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,  # its own process group, as a shell's job is
    )
    os.close(terminal)
    shown = bytearray()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (data_dir / "devnet.json").exists():
            _drain(master, shown)
            assert devnet.poll() is None and time.monotonic() < deadline, shown.decode(errors="replace")
        _drain(master, shown)
        pids = json.loads((data_dir / "devnet.json").read_text())["pids"]
        assert {"relay", "router", "node-1", "node-2", "postgres"} <= set(pids)
        os.close(master)
        master = -1
        os.killpg(devnet.pid, signal.SIGHUP)
        devnet.wait(timeout=60)
        assert wait_until_gone(marker, data_dir / "pg", 20) == []
        assert not is_postmaster(pids["postgres"], data_dir / "pg")
    finally:
        if master >= 0:
            os.close(master)
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()
