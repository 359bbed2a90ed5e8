"""The embedded PostgreSQL as the CLI uses it: start quietly, and stop it for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

STOP_TIMEOUT_S = 10.0


def start_postgres(pgdata: Path, *, keep_running: bool) -> str:
    """Start (or join) the embedded server in `pgdata`; returns its DSN."""
    from fedai.store.embedded import start_embedded

    return start_embedded(pgdata, keep_running=keep_running)


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid from `postmaster.pid`, if the file exists."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def is_postmaster(pid: int, pgdata: Path) -> bool:
    """True if `pid` is a live postgres serving `pgdata`.

    Checked in /proc where there is one (so a reused pid is never mistaken for it), else by existence.
    """
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"postgres" in cmdline and str(pgdata.resolve()).encode() in cmdline


def stop_postgres(pgdata: Path, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the embedded server in `pgdata`, even if stale handles (from a killed run) would keep it up.

    First the library's own stop; if the postmaster still runs, SIGINT (fast shutdown), then SIGQUIT.
    """
    from fedai.store.embedded import stop_embedded

    stop_embedded(pgdata)
    pid = postmaster_pid(pgdata)
    if pid is None or not is_postmaster(pid, pgdata):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while is_postmaster(pid, pgdata) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_postmaster(pid, pgdata):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
