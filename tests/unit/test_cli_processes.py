"""Process supervision: start with env and a log, wait for a line or HTTP, stop for sure, forward signals."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fedai.cli.processes import (
    ProcessFailed,
    Supervisor,
    describe_exit,
    exit_status,
    free_port,
    run_foreground,
    spawn,
    stop_children,
    tail_file,
    wait_for_http,
    wait_for_line,
)

PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", code]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_spawn_passes_env_and_logs_stdout_and_stderr(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    code = "import os, sys; print('hello', os.environ['FEDAI_X'], flush=True); print('oops', file=sys.stderr)"
    child = spawn("child", python(code), {"FEDAI_X": "42", "PATH": os.environ["PATH"]}, log)
    assert child.popen.wait(10) == 0
    text = log.read_text()
    assert "hello 42" in text and "oops" in text


def test_wait_for_line_returns_the_match(tmp_path: Path) -> None:
    code = "import time; print('noise', flush=True); print('ready on ws://127.0.0.1:9', flush=True); time.sleep(30)"
    child = spawn("relay", python(code), os.environ, tmp_path / "relay.log")
    try:
        match = wait_for_line(child, re.compile(r"ready on (\S+)"), timeout=10)
        assert match.group(1) == "ws://127.0.0.1:9"
    finally:
        stop_children([child])
    assert child.poll() is not None


def test_wait_for_line_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('config error: ROUTER_PRIVATE_KEY is required', file=sys.stderr); sys.exit(2)"
    child = spawn("router", python(code), os.environ, tmp_path / "router.log")
    with pytest.raises(ProcessFailed) as info:
        wait_for_line(child, re.compile("never"), timeout=10)
    assert info.value.child.name == "router"
    assert "exited with status 2" in info.value.reason
    assert "ROUTER_PRIVATE_KEY is required" in info.value.log_tail


def test_wait_for_line_times_out(tmp_path: Path) -> None:
    child = spawn("slow", python("import time; time.sleep(30)"), os.environ, tmp_path / "slow.log")
    try:
        with pytest.raises(ProcessFailed, match="within 0 s"):
            wait_for_line(child, re.compile("ready"), timeout=0.2)
    finally:
        stop_children([child])


def test_wait_for_http_reports_a_dead_child(tmp_path: Path) -> None:
    child = spawn("node", python("import sys; sys.exit(3)"), os.environ, tmp_path / "node.log")
    child.popen.wait(10)
    with pytest.raises(ProcessFailed, match="exited with status 3"):
        wait_for_http(child, f"http://127.0.0.1:{free_port()}/health", timeout=5)


def test_wait_for_http_times_out_naming_what_it_waited_for(tmp_path: Path) -> None:
    child = spawn("node", python("import time; time.sleep(30)"), os.environ, tmp_path / "node.log")
    try:
        with pytest.raises(ProcessFailed, match="not ready within 0 s: the health check"):
            wait_for_http(child, f"http://127.0.0.1:{free_port()}/health", timeout=0.3, what="the health check")
    finally:
        stop_children([child])


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(60)"
    )
    child = spawn("stubborn", python(code), os.environ, tmp_path / "stubborn.log")
    wait_for_line(child, re.compile("armed"), timeout=10)
    started = time.monotonic()
    stop_children([child], grace=0.5)
    assert child.poll() == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_stop_goes_stage_by_stage(tmp_path: Path) -> None:
    """Higher stages stop first: a node is gone before the relay gets SIGTERM."""
    marker = tmp_path / "order"
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(marker)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor()
    for name, stage in (("relay", 0), ("router", 1), ("node", 2)):
        child = supervisor.spawn(name, [PY, "-c", code, name], os.environ, tmp_path / f"{name}.log", stage=stage)
        wait_for_line(child, re.compile("up"), timeout=10)
    supervisor.stop()
    assert marker.read_text().split() == ["node", "router", "relay"]
    assert supervisor.first_dead() is not None
    assert all(child.poll() == 0 for child in supervisor.children)


def test_first_dead_names_the_child(tmp_path: Path) -> None:
    supervisor = Supervisor()
    supervisor.spawn("ok", python("import time; time.sleep(30)"), os.environ, tmp_path / "ok.log")
    dead = supervisor.spawn("dead", python("import sys; sys.exit(4)"), os.environ, tmp_path / "dead.log")
    dead.popen.wait(10)
    try:
        found = supervisor.first_dead()
        assert found is not None and found[0].name == "dead" and found[1] == 4
    finally:
        supervisor.stop()


def test_run_foreground_returns_the_child_status() -> None:
    assert run_foreground(python("import sys; sys.exit(7)"), os.environ) == 7


def test_run_foreground_forwards_sigterm() -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(11)); time.sleep(30)"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert run_foreground(python(code), os.environ) == 11
    finally:
        timer.cancel()


def test_exit_status_and_description() -> None:
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 128 + signal.SIGTERM
    assert describe_exit(2) == "exited with status 2"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_tail_file(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_file(path, 3) == "line 97\nline 98\nline 99"
    assert "cannot read" in tail_file(tmp_path / "missing.log")
    (tmp_path / "empty.log").write_text("")
    assert tail_file(tmp_path / "empty.log") == "(log is empty)"


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a grandchild started by `spawn` gets SIGTERM when its parent is SIGKILLed."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    pidfile = tmp_path / "grandchild.pid"
    parent_code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from fedai.cli.processes import spawn\n"
        f"child = spawn('g', [sys.executable, '-c', 'import time; time.sleep(60)'], os.environ, Path({str(tmp_path / 'g.log')!r}))\n"
        f"Path({str(pidfile)!r}).write_text(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    parent = spawn("parent", python(parent_code), os.environ, tmp_path / "parent.log")
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, parent.tail()
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    parent.popen.kill()
    parent.popen.wait(10)
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
