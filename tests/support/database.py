"""A fresh PostgreSQL database per test run: the machine's server via FEDAI_TEST_DATABASE_URL, else embedded."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fedai.store.migrations import migrate_dsn


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@asynccontextmanager
async def test_database() -> AsyncIterator[str]:
    """Yield the DSN of a new, migrated database; drop it afterwards."""
    base = os.environ.get("FEDAI_TEST_DATABASE_URL", "").strip()
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if not base:
        from fedai.store.embedded import start_embedded, stop_embedded

        tmp = tempfile.TemporaryDirectory(prefix="fedai-test-pg-")
        base = start_embedded(Path(tmp.name) / "pg")
    name = f"fedai_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(base, name)
    await migrate_dsn(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        if tmp is not None:
            stop_embedded(Path(tmp.name) / "pg")
            tmp.cleanup()


@asynccontextmanager
async def extra_database(base_dsn: str, suffix: str) -> AsyncIterator[str]:
    """Another migrated database on the same server (a second router must not share the first one's registry)."""
    parts = urlsplit(base_dsn)
    name = f"{parts.path.lstrip('/')}_{suffix}"
    dsn = _with_database(base_dsn, name)
    admin = await asyncpg.connect(base_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate_dsn(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(base_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
