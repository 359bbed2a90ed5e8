"""`fedai relay|router|node|migrate`: run services as child processes configured by environment variables.

Flags are conveniences that set the documented variables (docs/decisions.md#configuration); anything else comes from
the current environment. Secrets are read from files (`--key-file`), never taken on the command line.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from fedai.cli.extras import needs_extra, require_extra
from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.node_admin import node_admin_group
from fedai.cli.node_drain import drain_cmd
from fedai.cli.output import console, fail, print_json
from fedai.cli.postgres import start_postgres
from fedai.cli.processes import python_module, run_foreground

RELAY_MODULE = "fedai.nostr"
ROUTER_MODULE = "fedai_router"
NODE_MODULE = "fedai_node"


def with_overrides(base: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, str]:
    """`base` plus every override that was given (None means "not given"); booleans become true/false."""
    env = dict(base)
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            if value:
                env[name] = ",".join(str(v) for v in value)
        else:
            env[name] = str(value)
    return env


def secret_from_file(path: Path | None) -> str | None:
    """The hex secret held in a key file, or None when no file was given."""
    if path is None:
        return None
    try:
        return load_secret(str(path)).secret_hex
    except KeyInputError as exc:
        fail(f"--key-file: {exc}", code=2)


def redact_dsn(dsn: str) -> str:
    """A database URL safe to print: the password replaced by ***."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@click.command("relay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7777, show_default=True, help="0 picks a free one.")
@needs_extra("relay")
def relay_cmd(host: str, port: int) -> None:
    """Run the embedded Nostr relay (nostr-sdk LocalRelay) until Ctrl-C."""
    argv = python_module(RELAY_MODULE, "--host", host, "--port", str(port))
    sys.exit(run_foreground(argv, os.environ))


def router_env(
    base: Mapping[str, str],
    *,
    key: str | None = None,
    host: str | None = None,
    port: int | None = None,
    db_url: str | None = None,
    data_dir: Path | None = None,
    relays: tuple[str, ...] = (),
    allow_private_endpoints: bool | None = None,
    log_level: str | None = None,
    public_url: str | None = None,
    admin_token_sha256: str | None = None,
) -> dict[str, str]:
    """The router's environment: `base` plus the variables the flags set."""
    return with_overrides(
        base,
        {
            "ROUTER_PRIVATE_KEY": key,
            "ROUTER_HOST": host,
            "ROUTER_PORT": port,
            "ROUTER_DB_URL": db_url,
            "FEDAI_DATA_DIR": data_dir,
            "ROUTER_RELAYS": list(relays),
            "ROUTER_ALLOW_PRIVATE_ENDPOINTS": allow_private_endpoints,
            "ROUTER_LOG_LEVEL": log_level,
            "ROUTER_PUBLIC_URL": public_url,
            "ROUTER_ADMIN_TOKEN_SHA256": admin_token_sha256,
        },
    )


@click.command("router")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Sets ROUTER_PRIVATE_KEY.")
@click.option("--host", help="ROUTER_HOST (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="ROUTER_PORT (default 8080).")
@click.option("--db-url", help="ROUTER_DB_URL (default: embedded Postgres under FEDAI_DATA_DIR).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="FEDAI_DATA_DIR (default .fedai).")
@click.option("--relay", "relays", multiple=True, help="ROUTER_RELAYS (repeatable ws:// or wss:// URL).")
@click.option(
    "--allow-private-endpoints/--no-allow-private-endpoints",
    default=None,
    help="ROUTER_ALLOW_PRIVATE_ENDPOINTS (loopback/private node endpoints; for local networks).",
)
@click.option("--log-level", help="ROUTER_LOG_LEVEL.")
@click.option("--public-url", help="ROUTER_PUBLIC_URL: the base URL clients use (NIP-98 is refused without it).")
@needs_extra("router")
def router_cmd(
    key_file: Path | None,
    host: str | None,
    port: int | None,
    db_url: str | None,
    data_dir: Path | None,
    relays: tuple[str, ...],
    allow_private_endpoints: bool | None,
    log_level: str | None,
    public_url: str | None,
) -> None:
    """Run a router (`python -m fedai_router`) configured by ROUTER_* variables and these flags."""
    env = router_env(
        os.environ,
        key=secret_from_file(key_file),
        host=host,
        port=port,
        db_url=db_url,
        data_dir=data_dir,
        relays=relays,
        allow_private_endpoints=allow_private_endpoints,
        log_level=log_level,
        public_url=public_url,
    )
    sys.exit(run_foreground(python_module(ROUTER_MODULE), env))


def node_env(
    base: Mapping[str, str],
    *,
    key: str | None = None,
    host: str | None = None,
    port: int | None = None,
    endpoint: str | None = None,
    router_url: str | None = None,
    router_pubkey: str | None = None,
    runner: str | None = None,
    runner_url: str | None = None,
    model: str | None = None,
    heartbeat_ms: int | None = None,
    relays: tuple[str, ...] = (),
    price_input_msat: int | None = None,
    price_output_msat: int | None = None,
    capacity: int | None = None,
    log_level: str | None = None,
) -> dict[str, str]:
    """The node's environment: `base` plus the variables the flags set."""
    return with_overrides(
        base,
        {
            "NODE_PRIVATE_KEY": key,
            "NODE_HOST": host,
            "NODE_PORT": port,
            "NODE_ENDPOINT": endpoint,
            "ROUTER_ENDPOINT": router_url,
            "ROUTER_PUBLIC_KEY": router_pubkey,
            "NODE_RUNNER": runner,
            "NODE_RUNNER_URL": runner_url,
            "NODE_MODEL_ID": model,
            "NODE_HEARTBEAT_MS": heartbeat_ms,
            "NODE_RELAYS": list(relays),
            "NODE_PRICE_INPUT_MSAT": price_input_msat,
            "NODE_PRICE_OUTPUT_MSAT": price_output_msat,
            "NODE_CAPACITY_MAX": capacity,
            "NODE_LOG_LEVEL": log_level,
        },
    )


@click.group("node", invoke_without_command=True)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Sets NODE_PRIVATE_KEY.")
@click.option("--host", help="NODE_HOST (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="NODE_PORT (default 8090).")
@click.option("--endpoint", help="NODE_ENDPOINT: the URL routers reach this node at.")
@click.option("--router-url", help="ROUTER_ENDPOINT: router base URL(s) to heartbeat to (comma list).")
@click.option("--router-pubkey", help="ROUTER_PUBLIC_KEY: router key(s) this node serves (npub/hex, comma list).")
@click.option("--runner", help="NODE_RUNNER (required by the node; `mock` is for tests and demos).")
@click.option("--runner-url", help="NODE_RUNNER_URL: the model server's base URL.")
@click.option("--model", help="NODE_MODEL_ID.")
@click.option("--heartbeat-ms", type=click.IntRange(100), help="NODE_HEARTBEAT_MS.")
@click.option("--relay", "relays", multiple=True, help="NODE_RELAYS (repeatable ws:// or wss:// URL).")
@click.option("--price-input-msat", type=click.IntRange(0), help="NODE_PRICE_INPUT_MSAT (per 1k tokens).")
@click.option("--price-output-msat", type=click.IntRange(0), help="NODE_PRICE_OUTPUT_MSAT (per 1k tokens).")
@click.option("--capacity", type=click.IntRange(1), help="NODE_CAPACITY_MAX.")
@click.option("--log-level", help="NODE_LOG_LEVEL.")
@click.pass_context
def node_cmd(
    ctx: click.Context,
    key_file: Path | None,
    host: str | None,
    port: int | None,
    endpoint: str | None,
    router_url: str | None,
    router_pubkey: str | None,
    runner: str | None,
    runner_url: str | None,
    model: str | None,
    heartbeat_ms: int | None,
    relays: tuple[str, ...],
    price_input_msat: int | None,
    price_output_msat: int | None,
    capacity: int | None,
    log_level: str | None,
) -> None:
    """Run a node (`python -m fedai_node`) configured by NODE_* variables and these flags.

    `fedai node drain --pid PID` asks a running node to drain and stop; `fedai node admin …` calls a node's admin
    API (NODE_ADMIN_KEYS)."""
    if ctx.invoked_subcommand is not None:
        return
    require_extra("node", "fedai node")
    env = node_env(
        os.environ,
        key=secret_from_file(key_file),
        host=host,
        port=port,
        endpoint=endpoint,
        router_url=router_url,
        router_pubkey=router_pubkey,
        runner=runner,
        runner_url=runner_url,
        model=model,
        heartbeat_ms=heartbeat_ms,
        relays=relays,
        price_input_msat=price_input_msat,
        price_output_msat=price_output_msat,
        capacity=capacity,
        log_level=log_level,
    )
    sys.exit(run_foreground(python_module(NODE_MODULE), env))


def migration_target(database_url: str | None, environ: Mapping[str, str]) -> str | None:
    """The server to migrate: --database-url, else ROUTER_DB_URL, else DATABASE_URL (the router's order)."""
    for value in (database_url, environ.get("ROUTER_DB_URL"), environ.get("DATABASE_URL")):
        if value and value.strip():
            return value.strip()
    return None


@click.command("migrate")
@click.option("--database-url", help="Server to migrate (else ROUTER_DB_URL, DATABASE_URL, else embedded).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FEDAI_DATA_DIR",
    default=Path(".fedai"),
    show_default=True,
    help="Where the embedded server lives.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@needs_extra("router")
def migrate_cmd(database_url: str | None, data_dir: Path, as_json: bool) -> None:
    """Apply pending SQL migrations (in order, each in a transaction, under an advisory lock)."""
    from fedai.store.migrations import migrate_dsn

    dsn = migration_target(database_url, os.environ)
    embedded = dsn is None
    pgdata = data_dir / "pg"
    try:
        if dsn is None:
            dsn = start_postgres(pgdata, keep_running=False)
        applied = asyncio.run(migrate_dsn(dsn))
    except Exception as exc:  # noqa: BLE001 - OS, asyncpg and server errors share no base; report, don't trace
        password = urlsplit(dsn).password if dsn else None
        message = str(exc).replace(password, "***") if password else str(exc)
        fail(f"migration failed: {type(exc).__name__}: {message}")
    finally:
        if embedded:
            from fedai.store.embedded import stop_embedded

            stop_embedded(pgdata)  # leaves a server the router (or a devnet) also uses running
    where = f"embedded server in {pgdata}" if embedded else redact_dsn(dsn)
    if as_json:
        print_json({"database": where, "applied": applied})
        return
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    console.print(f"{len(applied)} migration(s) applied to {where}; schema is up to date")


node_cmd.add_command(drain_cmd)
node_cmd.add_command(node_admin_group)
