"""asyncpg pools with a binary jsonb codec, and the choice between a configured server and embedded Postgres."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg
import msgspec

from fedai.service.config import ConfigError

T = TypeVar("T")

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


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset round trip: fedai never leaves session state (locks, LISTEN, SET)
    on a pooled connection, and the reset would double the cost of every hot-path query."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, timeout_s: float = 60.0) -> asyncpg.Pool:
    """A pool of `min_size`..`max_size` connections; `timeout_s` bounds each connection attempt."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=timeout_s, init=_init_connection, reset=_no_reset
    )
    assert pool is not None
    return pool


CONNECT_TIMEOUT_S = 10.0  # a service's connection attempts at start
# what an unusable server, DSN or data directory raises at start (asyncpg's errors, sockets, the embedded server)
START_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ValueError,
    subprocess.SubprocessError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def redact_dsn(dsn: str) -> str:
    """The DSN safe to print: the password replaced by ***."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return "(a DSN that does not parse)"
    return dsn.replace(f":{password}@", ":***@", 1) if password else dsn


def unusable_database(variable: str, target: str, exc: BaseException, dsn: str | None = None) -> ConfigError:
    """`<VARIABLE>: cannot use <target>: <reason>`, for a database a service cannot use at start; the reason
    never carries `dsn`'s password."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    elif isinstance(exc, subprocess.CalledProcessError):
        command = exc.cmd[0] if isinstance(exc.cmd, list | tuple) and exc.cmd else "a command"
        reason = f"{command} exited with status {exc.returncode} (see its log there)"
    try:
        password = urlsplit(dsn).password if dsn else None
    except ValueError:
        password = None
    if password:
        reason = reason.replace(password, "***")
    return ConfigError(f"{variable}: cannot use {target}: {reason}")


# What a database server still starting (or not yet resolvable, in a container network) gives at connect:
# worth waiting for at start when the operator asked for it (ROUTER_DB_WAIT_S, NODE_DB_WAIT_S).
NOT_READY: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, a name that does not resolve yet
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: "the database system is starting up"
    asyncpg.ConnectionDoesNotExistError,  # closed during the handshake
)
FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0


async def wait_for_database(
    attempt: Callable[[], Awaitable[T]], wait_s: float, describe: Callable[[BaseException], str]
) -> T:
    """`attempt()`, tried again after 0.25 s, 0.5 s, ... up to 5 s apart while it fails with a `NOT_READY`
    error and `wait_s` seconds have not passed; then that error. Other errors are raised at once (a wrong
    password or a missing database does not heal). Each retry logs one warning line, `describe(error)`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = FIRST_RETRY_S
    while True:
        try:
            return await attempt()
        except NOT_READY as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise
            logging.getLogger("fedai.store").warning(
                f"database not ready, retrying for up to {left:.0f} s more: {describe(exc)}"
            )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, MAX_RETRY_S)


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


class Executor(Protocol):
    """What the group-commit writers need: a pool, or one dedicated connection."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def executemany(self, command: str, args: Iterable[Sequence[Any]]) -> None: ...


class DedicatedConnection:
    """One connection kept open for a serialized writer, so the hot path skips pool acquire/release
    (measured: ~70 µs of CPU per query here). A query that fails for any reason other than an SQL error
    (connection lost, protocol state broken, cancelled mid-flight) discards the connection; the next use
    opens a new one."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self._dsn)
            await _init_connection(conn)
            self._conn = conn
        return self._conn

    async def _run(self, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        conn = await self._connection()
        try:
            return await call(conn)
        except asyncpg.PostgresError:
            raise  # the server refused the statement; the connection itself is fine (or reports closed)
        except BaseException:
            await self.close()
            raise

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list(await self._run(lambda conn: conn.fetch(query, *args)))

    async def executemany(self, command: str, args: Iterable[Sequence[Any]]) -> None:
        await self._run(lambda conn: conn.executemany(command, args))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()


class DedicatedOrPool:
    """A `DedicatedConnection` for whichever caller finds it free, the pool for one that comes while it is busy:
    requests one at a time skip the pool's acquire and release, concurrent ones never queue behind each other
    (for statements that are not group-committed, e.g. payment claims)."""

    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self._dedicated = DedicatedConnection(dsn)
        self._pool = pool
        self._busy = False

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        if self._busy:
            return list(await self._pool.fetch(query, *args))
        self._busy = True
        try:
            return await self._dedicated.fetch(query, *args)
        finally:
            self._busy = False

    async def executemany(self, command: str, args: Iterable[Sequence[Any]]) -> None:
        if self._busy:
            await self._pool.executemany(command, args)
            return
        self._busy = True
        try:
            await self._dedicated.executemany(command, args)
        finally:
            self._busy = False

    async def close(self) -> None:
        await self._dedicated.close()


# What a lost or refused database connection raises: the server is down, restarting or unreachable.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (asyncpg's own ConnectionResetError / ConnectionRefusedError)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.InterfaceError,  # connection closed under a query, pool closing
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, crash, "starting up"
    asyncpg.InternalClientError,  # the protocol state a connection lost mid-query leaves behind
)


def is_unavailable(exc: BaseException) -> bool:
    """True if `exc` says the database cannot be reached right now (worth a typed 503 and a retry)."""
    return isinstance(exc, UNAVAILABLE)
