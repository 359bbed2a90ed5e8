"""asyncpg pools with a binary jsonb codec, and the choice between a configured server and embedded Postgres."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _encode_jsonb(value: Any) -> bytes:
    # binary jsonb: a version byte, then the JSON text (binary format keeps COPY working)
    return b"\x01" + (value if isinstance(value, bytes) else _json_encode(value))


def _decode_jsonb(data: bytes) -> Any:
    return _json_decode(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
    assert pool is not None
    return pool


def configured_dsn(*names: str) -> str | None:
    """The first non-empty of the named environment variables (e.g. ROUTER_DB_URL, DATABASE_URL)."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_dsn(data_dir: Path, *names: str) -> str:
    """A configured server if one is named, else an embedded PostgreSQL under `data_dir/pg` (started here)."""
    dsn = configured_dsn(*names)
    if dsn:
        return dsn
    from fedai.store.embedded import start_embedded

    return start_embedded(data_dir / "pg")
