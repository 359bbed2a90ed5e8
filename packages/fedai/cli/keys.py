"""`fedai keys gen|show`: identities for clients, routers and nodes. Secrets are printed only on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fedai.cli.keyfile import KeyInputError, parse_any, write_secret_file
from fedai.cli.output import console, fail, print_json
from fedai.protocol.keys import Keys, npub


@click.group("keys")
def keys_group() -> None:
    """Generate and inspect secp256k1 keys (hex and NIP-19 npub/nsec)."""


def _render(document: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name in ("npub", "pubkey", "file", "nsec", "secret_hex"):
        if name in document:
            table.add_row(name, str(document[name]))
    console.print(table)


@keys_group.command("gen")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Write the hex secret here (0600).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--show-secret", is_flag=True, help="Also print the secret (nsec and hex).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def keys_gen(out: Path | None, force: bool, show_secret: bool, as_json: bool) -> None:
    """Generate a new key: prints npub and hex pubkey; the secret only with --show-secret."""
    keys = Keys.generate()
    document: dict[str, Any] = {"pubkey": keys.pubkey, "npub": keys.npub}
    if out is not None:
        try:
            write_secret_file(out, keys, overwrite=force)
        except KeyInputError as exc:
            fail(str(exc))
        document["file"] = str(out)
    if show_secret:
        document["nsec"] = keys.nsec
        document["secret_hex"] = keys.secret_hex
    if as_json:
        print_json(document)
        return
    _render(document, "new key")
    if out is None and not show_secret:
        console.print("[dim]secret not shown: pass --out FILE to keep it, or --show-secret to print it[/dim]")


@keys_group.command("show")
@click.argument("key_or_file")
@click.option("--public", is_flag=True, help="Read bare 64-hex input as a public key (default: a secret key).")
@click.option("--secret", "show_secret", is_flag=True, help="Also print the secret (when the input is one).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def keys_show(key_or_file: str, public: bool, show_secret: bool, as_json: bool) -> None:
    """Show the public key of KEY_OR_FILE: an nsec/hex secret, an npub/hex pubkey, or a file holding one."""
    try:
        parsed = parse_any(key_or_file, public=public)
    except KeyInputError as exc:
        fail(str(exc), code=2)
    document: dict[str, Any] = {
        "pubkey": parsed.pubkey,
        "npub": npub(parsed.pubkey),
        "type": "secret" if parsed.keys is not None else "public",
    }
    if parsed.source != "argument":
        document["file"] = parsed.source
    if show_secret:
        if parsed.keys is None:
            fail("--secret: the input is a public key, there is no secret to show", code=2)
        document["nsec"] = parsed.keys.nsec
        document["secret_hex"] = parsed.keys.secret_hex
    if as_json:
        print_json(document)
        return
    _render(document, f"{document['type']} key")
