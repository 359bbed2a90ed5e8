"""Shared output helpers: one rich console per stream, JSON documents for scripts, short identifiers."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import npub
from fedai.sdk.errors import FedaiClientError, RouterTimeout

console = Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)

CHECK = "[green]✓[/green]"
CROSS = "[red]✗[/red]"


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (what `--json` promises scripts)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))


def short_id(event_id: str, length: int = 12) -> str:
    """A short event id for tables: the first `length` hex characters."""
    return event_id[:length] + "…"


def short_npub(pubkey_hex: str, head: int = 8, tail: int = 6) -> str:
    """`npub1abcdefgh…uvwxyz`: enough to tell keys apart at a glance."""
    full = npub(pubkey_hex)
    return f"{full[: 5 + head]}…{full[-tail:]}"


def mark(ok: bool) -> str:
    return CHECK if ok else CROSS


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def as_fedai_error(err: FedaiError | FedaiClientError) -> FedaiError:
    """The error as the CLI reports it. The router's answers and the SDK's checks carry their code; a router
    that could not be reached is reported as it always was, `upstream_timeout` for a timeout, else
    `upstream_error`, with the SDK's message."""
    if isinstance(err, FedaiError):
        return err
    code = ErrorCode.UPSTREAM_TIMEOUT if isinstance(err, RouterTimeout) else ErrorCode.UPSTREAM_ERROR
    return FedaiError(code, str(err))


def fail_fedai(err: FedaiError | FedaiClientError, *, as_json: bool, hint: str | None = None) -> NoReturn:
    """Report a protocol error: `error <code>: <message>` on stderr, or `{"error": {...}}` with `--json`; exit 1."""
    reported = as_fedai_error(err)
    if as_json:
        document = reported.to_dict()
        step = getattr(err, "step", None)
        if step is not None:
            document["error"]["step"] = step
        print_json(document)
    else:
        click.echo(f"error {reported.code.value}: {reported.message}", err=True)
        if hint:
            click.echo(f"hint: {hint}", err=True)
    sys.exit(1)
