"""Child-process supervision for the CLI: start with env and a log file, wait until ready, stop for sure.

Children stay in the CLI's process group (so a terminal's Ctrl-C reaches them too) and, on Linux, get
SIGTERM if the CLI itself dies (PR_SET_PDEATHSIG), but the CLI always stops them itself as well:
SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from fedai.service.children import DIE_WITH_PARENT

STOP_GRACE_S = 5.0


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args…` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail_file(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a (log) file, or a note when it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    text = data.decode("utf-8", "replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) if text else "(log is empty)"


def exit_status(returncode: int) -> int:
    """A shell-style exit status: killed by signal N → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Child:
    """One supervised child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stage: int = 0  # higher stages stop first (e.g. nodes 2, router 1, relay 0)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 20) -> str:
        return tail_file(self.log_path, lines)


class ProcessFailed(RuntimeError):
    """A child failed to start or died; carries its name, the reason and the tail of its log."""

    def __init__(self, child: Child, reason: str) -> None:
        super().__init__(f"{child.name} {reason}")
        self.child = child
        self.reason = reason
        self.log_tail = child.tail()


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, *, stage: int = 0) -> Child:
    """Start `argv` with exactly `env`, stdout and stderr appended to `log_path`, stdin closed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            preexec_fn=DIE_WITH_PARENT,  # only calls prctl(2): no locks, safe after fork
        )
    return Child(name, popen, log_path, stage)


def wait_for_line(child: Child, pattern: re.Pattern[str], *, timeout: float, offset: int = 0) -> re.Match[str]:
    """Poll the child's log (from byte `offset`) until a line matches; raise if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            text = child.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            for line in text.splitlines():
                match = pattern.search(line)
                if match:
                    return match
        returncode = child.poll()
        if returncode is not None:
            raise ProcessFailed(child, describe_exit(returncode) + " before it was ready")
        if time.monotonic() > deadline:
            raise ProcessFailed(child, f"printed no line matching {pattern.pattern!r} within {timeout:.0f} s")
        time.sleep(0.05)


def wait_for_http(
    child: Child,
    url: str,
    *,
    timeout: float,
    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    what: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Poll `url` (sending `headers`) until `ready(response)`; raise `ProcessFailed` if the child exits or time
    runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as http:
        while True:
            returncode = child.poll()
            if returncode is not None:
                raise ProcessFailed(child, describe_exit(returncode) + " before it was ready")
            try:
                response = http.get(url, headers=headers)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if ready(response):
                    return response
                last = f"HTTP {response.status_code}"
            if time.monotonic() > deadline:
                raise ProcessFailed(child, f"not ready within {timeout:.0f} s: {what or url} ({last})")
            time.sleep(0.1)


def _terminate(child: Child) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.popen.send_signal(signal.SIGTERM)


def stop_children(children: Sequence[Child], grace: float = STOP_GRACE_S) -> None:
    """Stop children stage by stage (highest first) with SIGTERM; after `grace` seconds in all, SIGKILL.

    Stopping in stages lets clients of a service (nodes of the router, everyone of the relay) leave first.
    """
    deadline = time.monotonic() + grace
    for stage in sorted({child.stage for child in children}, reverse=True):
        group = [child for child in children if child.stage == stage]
        for child in group:
            _terminate(child)
        for child in group:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.kill()
            child.popen.wait()


@dataclass
class Supervisor:
    """The children one command started; `stop()` is idempotent and also runs at interpreter exit."""

    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, *, stage: int = 0) -> Child:
        child = spawn(name, argv, env, log_path, stage=stage)
        self.children.append(child)
        return child

    def first_dead(self) -> tuple[Child, int] | None:
        for child in self.children:
            returncode = child.poll()
            if returncode is not None:
                return child, returncode
        return None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        stop_children(self.children, grace)


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, a stop signal raises `Interrupted`; previous handlers come back afterwards."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Within the block (clean-up), stop signals are recorded instead of interrupting it."""
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_foreground(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run a service in the foreground and return its exit status, forwarding SIGINT/SIGTERM/SIGHUP to it.

    The child gets its own process group, so a terminal's Ctrl-C reaches it once (through us), not twice.
    """
    popen = subprocess.Popen(list(argv), env=dict(env), process_group=0, preexec_fn=DIE_WITH_PARENT)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    try:
        return exit_status(popen.wait())
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if popen.poll() is None:
            stop_children([Child("service", popen, Path(os.devnull))])
