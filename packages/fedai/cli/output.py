"""Shared output helpers: one rich console per stream, JSON documents for scripts, short identifiers."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import npub
from fedai.sdk.errors import FedaiClientError, RouterTimeout

console = Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)

UNBOUNDED = 10_000  # columns: what a table may take with --wide
CHECK = "[green]✓[/green]"
CROSS = "[red]✗[/red]"


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (what `--json` promises scripts)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))


def short_id(event_id: str, head: int = 8, tail: int = 4) -> str:
    """`0123abcd…cdef`: an event id short enough for a table line (whole in `--json`)."""
    return f"{event_id[:head]}…{event_id[-tail:]}"


def short_npub(pubkey_hex: str, head: int = 8, tail: int = 6) -> str:
    """`npub1abcdefgh…uvwxyz`: enough to tell keys apart at a glance."""
    full = npub(pubkey_hex)
    return f"{full[: 5 + head]}…{full[-tail:]}"


def column(table: Table, header: str, **options: Any) -> None:
    """A column whose header is never cut (`verd…`): it is at least as wide as its header."""
    table.add_column(header, min_width=len(header), **options)


def print_table(table: Table, *, wide: bool = False) -> None:
    """A table at the terminal's width (80 columns when piped: tables are laid out to fit); with `wide`, at its
    natural width, nothing cut, however wide that is."""
    if not wide:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum
    Console(file=console.file, width=max(natural, console.width), highlight=False, soft_wrap=False).print(table)


def paste_line(text: str) -> None:
    """A line holding a value meant to be copied elsewhere: printed whole, never wrapped, whatever the width."""
    click.echo(text)


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
