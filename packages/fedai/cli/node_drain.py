"""`fedai node drain`: ask a running node to drain and stop (runbooks/node-ops.md#drain).

A node runs in the foreground (`fedai node`, systemd, a container), so the request is the one its supervisor
would send: SIGTERM to its process, named by `--pid` or a `--pid-file` (the one systemd's `PIDFile=` or a
wrapper writes). The node then tells its routers it is leaving, refuses new requests, finishes its streams
within NODE_DRAIN_TIMEOUT_S and exits; this command waits for that exit. It refuses a process that is not a
fedai node (read from /proc where there is one), so a stale pid file cannot stop something else.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from fedai.cli.output import console, fail

POLL_S = 0.2
NODE_MARKERS = ("fedai_node", "fedai node")  # `python -m fedai_node`, or `fedai node` forwarding the signal


def read_pid(pid: int | None, pid_file: Path | None) -> int:
    """The pid from `--pid` or the first line of `--pid-file` (exactly one of them)."""
    if (pid is None) == (pid_file is None):
        fail("give exactly one of --pid and --pid-file", code=2)
    if pid is not None:
        return pid
    assert pid_file is not None
    try:
        lines = pid_file.read_text().strip().splitlines()
        if not lines:
            raise ValueError("empty")
        return int(lines[0])
    except (OSError, ValueError) as exc:
        fail(f"--pid-file {pid_file}: no pid in it ({type(exc).__name__})", code=2)


def command_line(pid: int) -> str | None:
    """The process's command line (arguments joined by spaces), None where /proc does not say."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None if not Path("/proc/self").exists() else ""
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_node(cmdline: str | None) -> bool:
    """True for a fedai node's command line; an unreadable one (no /proc) is given the benefit of the doubt."""
    if cmdline is None:
        return True
    return any(marker in cmdline for marker in NODE_MARKERS)


def alive(pid: int) -> bool:
    """The process exists and has not exited (an exited child its parent has not reaped yet is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]  # the state follows the command name in parentheses


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


@click.command("drain")
@click.option("--pid", type=click.IntRange(1), help="The node's process id.")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), help="A file holding it.")
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the node to exit (its own bound is NODE_DRAIN_TIMEOUT_S).",
)
def drain_cmd(pid: int | None, pid_file: Path | None, timeout: float) -> None:
    """Drain a running node: routers told at once, new requests refused, streams finished, then it exits."""
    target = read_pid(pid, pid_file)
    if not alive(target):
        fail(f"no process {target}")
    cmdline = command_line(target)  # "" (no /proc entry) for a live process is no node of ours
    if not is_node(cmdline):
        fail(f"process {target} is not a fedai node ({cmdline[:80] if cmdline else '?'}); nothing sent")
    try:
        os.kill(target, signal.SIGTERM)
    except ProcessLookupError:
        fail(f"no process {target}")
    except PermissionError:
        fail(f"not allowed to signal process {target} (run as the node's user)")
    console.print(f"node {target}: draining (SIGTERM sent)")
    if not wait_gone(target, timeout):
        fail(f"node {target} still running after {timeout:g} s (its drain may be longer: NODE_DRAIN_TIMEOUT_S)")
    console.print(f"node {target}: drained and stopped")
