"""`fedai apikey new`: an API key for the router's OpenAI-compatible API, mapped to a client's pubkey, and
optionally bound to the client's own wallet connection (NWC) with a budget (docs/payments.md#the-openai-edge)."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

import click

from fedai.cli.output import console, fail, print_json
from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import npub, parse_pubkey


@click.group("apikey")
def apikey_group() -> None:
    """API keys for the OpenAI-compatible API (the router stores only their sha256)."""


def _write_wallet_file(path: Path, uri: str) -> str:
    """The NWC URI (a secret) written to a new file only its owner reads; its absolute path."""
    from fedai.payments.backends.nwc_uri import parse_nwc_uri

    if uri == "-":
        uri = sys.stdin.readline().strip()
    try:
        parse_nwc_uri(uri)
    except ValueError as exc:
        fail(f"--nwc: {exc}", code=2)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"--wallet-file: cannot create {path} ({exc.strerror}); it must not exist yet", code=2)
    with os.fdopen(fd, "w") as out:
        out.write(uri + "\n")
    return str(path.resolve())


@apikey_group.command("new")
@click.option("--client", "client", required=True, help="The client's public key (npub or hex) the key acts as.")
@click.option(
    "--nwc", "nwc", help="The client's NWC connection URI (or - to read it from stdin): the router pays from it."
)
@click.option("--budget-msat", "budget", type=click.IntRange(min=1), help="With --nwc: the most the router may pay.")
@click.option(
    "--wallet-file",
    "wallet_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --nwc: a new file (mode 0600) the URI is written to, for the router to read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def new_cmd(client: str, nwc: str | None, budget: int | None, wallet_file: Path | None, as_json: bool) -> None:
    """Make a key; add the printed entry to the router's ROUTER_API_KEYS (comma-separated).

    With --nwc, --budget-msat and --wallet-file, the key is also bound to the client's wallet: the URI goes to the
    wallet file (never printed) and the second entry printed goes to ROUTER_API_KEY_WALLETS.

    For a devnet: `ROUTER_API_KEYS=<entry> fedai devnet` (its router inherits ROUTER_* variables)."""
    try:
        pubkey = parse_pubkey(client)
    except KeyFormatError as exc:
        fail(f"--client: {exc}", code=2)
    if nwc is not None and (budget is None or wallet_file is None):
        fail("--nwc needs --budget-msat and --wallet-file", code=2)
    if nwc is None and (budget is not None or wallet_file is not None):
        fail("--budget-msat and --wallet-file bind a wallet given with --nwc", code=2)
    key = "fk-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    entry = f"{npub(pubkey)}:{digest}"
    bound = None
    if nwc is not None and wallet_file is not None:
        bound = f"{digest}:{budget}:{_write_wallet_file(wallet_file, nwc)}"
    if as_json:
        print_json({"api_key": key, "client": pubkey, "router_api_keys_entry": entry} | _wallets_field(bound))
        return
    # each value on its own line, never wrapped (at 80 columns or in a pipe), so a copy or `tail -1` pastes it whole
    console.print("api key (shown once; give it to the client):")
    console.print(key, soft_wrap=True, markup=False, style="bold")
    console.print("add this entry to the router's ROUTER_API_KEYS (comma-separated entries):")
    console.print(entry, soft_wrap=True, markup=False)
    if bound is not None:
        console.print("and this one to its ROUTER_API_KEY_WALLETS (the wallet file must be readable by the router):")
        console.print(bound, soft_wrap=True, markup=False)


def _wallets_field(bound: str | None) -> dict[str, str]:
    return {} if bound is None else {"router_api_key_wallets_entry": bound}
