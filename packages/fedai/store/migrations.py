"""Migration runner: plain SQL files applied in order, each in a transaction, under an advisory lock."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_ADVISORY_LOCK_KEY = 0x0FEDA1  # any constant shared by all replicas
_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def migrations_dir() -> Path:
    """`FEDAI_MIGRATIONS_DIR`, else the repository's `migrations/` beside the source tree, else the copy a
    regular (non-editable) install puts in `<prefix>/share/fedai/migrations`."""
    override = os.environ.get("FEDAI_MIGRATIONS_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    candidates = [parent / "migrations" for parent in here.parents]
    candidates.append(Path(sys.prefix) / "share" / "fedai" / "migrations")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("0*.sql")):
            return candidate
    raise FileNotFoundError("migrations/ not found; set FEDAI_MIGRATIONS_DIR")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(match.group(1), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run from many replicas at once."""
    pending = load_migrations(directory)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            applied.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied


async def migrate_dsn(dsn: str, directory: Path | None = None) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, directory)
    finally:
        await conn.close()
