"""`fedai apikey new`: an API key for the router's OpenAI-compatible API, mapped to a client's pubkey."""

from __future__ import annotations

import hashlib
import secrets

import click

from fedai.cli.output import console, fail, print_json
from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import npub, parse_pubkey


@click.group("apikey")
def apikey_group() -> None:
    """API keys for the OpenAI-compatible API (the router stores only their sha256)."""


@apikey_group.command("new")
@click.option("--client", "client", required=True, help="The client's public key (npub or hex) the key acts as.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def new_cmd(client: str, as_json: bool) -> None:
    """Make a key; add the printed entry to the router's ROUTER_API_KEYS (comma-separated).

    For a devnet: `ROUTER_API_KEYS=<entry> fedai devnet` (its router inherits ROUTER_* variables)."""
    try:
        pubkey = parse_pubkey(client)
    except KeyFormatError as exc:
        fail(f"--client: {exc}", code=2)
    key = "fk-" + secrets.token_urlsafe(32)
    entry = f"{npub(pubkey)}:{hashlib.sha256(key.encode()).hexdigest()}"
    if as_json:
        print_json({"api_key": key, "client": pubkey, "router_api_keys_entry": entry})
        return
    # each value on its own line, never wrapped (at 80 columns or in a pipe), so a copy or `tail -1` pastes it whole
    console.print("api key (shown once; give it to the client):")
    console.print(key, soft_wrap=True, markup=False, style="bold")
    console.print("add this entry to the router's ROUTER_API_KEYS (comma-separated entries):")
    console.print(entry, soft_wrap=True, markup=False)
