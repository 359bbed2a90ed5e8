"""Where the client commands send requests and as whom (`Target`; defaults come from a running devnet), and
`fedai status`. `infer.py` and `quote.py` hold the other client commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from fedai.cli.admin import HINT, OpsAuth, admin_options, resolve_admin
from fedai.cli.devnet_file import DevnetFileError, DevnetInfo, default_devnet, read_devnet
from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.output import column, console, fail, fail_fedai, mark, paste_line, print_json, print_table, short_npub
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.keys import Keys, npub, parse_pubkey
from fedai.sdk import Client, FedaiClientError, RouterUnreachable

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Target:
    """Where to send requests and as whom."""

    router_url: str
    router_pubkey: str | None
    keys: Keys | None
    devnet: DevnetInfo | None

    def client(self, auth: OpsAuth | None = None, **options: Any) -> Client:
        """An SDK client for this target, carrying operator credentials for the ops views when given."""
        token, keys = (auth.token, auth.keys) if auth is not None else (None, None)
        return Client(
            self.router_url, self.keys, router_pubkey=self.router_pubkey, admin_token=token, admin_keys=keys, **options
        )

    def hint(self, err: FedaiError | FedaiClientError) -> str | None:
        if isinstance(err, RouterUnreachable):
            where = "the devnet's router" if self.devnet is not None else "the router"
            return f"is {where} at {self.router_url} running? (`fedai devnet` starts a local network)"
        return None


def target_options(func: F) -> F:
    """--router, --router-pubkey, --key and --devnet, shared by the client commands."""
    options = [
        click.option("--router", "router", envvar="FEDAI_ROUTER", help="Router base URL (env FEDAI_ROUTER)."),
        click.option("--router-pubkey", help="Pin the router's key (npub or hex); default: read from /health."),
        click.option("--key", "key", envvar="FEDAI_KEY", help="Client secret (nsec/hex) or a file holding it."),
        click.option(
            "--devnet",
            "devnet_dir",
            type=click.Path(path_type=Path),
            help="Use the devnet in this data dir (default: .fedai/devnet.json when present).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_target(router: str | None, router_pubkey: str | None, key: str | None, devnet_dir: Path | None) -> Target:
    """Explicit options win; the devnet file fills the gaps; with neither there is no router to talk to."""
    info: DevnetInfo | None = None
    location = devnet_dir or (default_devnet() if router is None else None)
    if location is not None:
        try:
            info = read_devnet(location)
        except DevnetFileError as exc:
            fail(str(exc), code=2)
    url = router or (info.router.url if info else None)
    if not url:
        fail("no router: pass --router URL (or set FEDAI_ROUTER), or start one with `fedai devnet`", code=2)
    pinned = router_pubkey or (info.router.pubkey if info and url == info.router.url else None)
    try:
        pinned = parse_pubkey(pinned) if pinned else None
    except KeyFormatError as exc:
        fail(f"--router-pubkey: {exc}", code=2)
    secret = key or (info.client_key_file if info else None)
    try:
        keys = load_secret(secret) if secret else None
    except KeyInputError as exc:
        fail(f"--key: {exc}", code=2)
    return Target(url.rstrip("/"), pinned, keys, info)


def warn_if_anonymous(target: Target) -> None:
    """Say once, on stderr, that requests are signed with a throwaway key when no client key was given."""
    if target.keys is None:
        click.echo(
            "note: no client key (--key, FEDAI_KEY or a devnet): this call signs with a\n"
            "new random key, so the router sees a new client each call and a quote cannot\n"
            "be reused. Create a key with `fedai keys gen --out client.key`, then pass\n"
            "--key client.key (or set FEDAI_KEY).",
            err=True,
        )


def default_model(client: Client) -> str:
    """The first model the router can serve now, per its public `/v1/models`."""
    models = client.models()
    if models:
        return models[0]
    raise FedaiError(ErrorCode.UNKNOWN_MODEL, "the router lists no node with a model; pass --model")


def _status_table(status: dict[str, Any], *, wide: bool) -> Table:
    """The node registry: fits 80 columns; `wide` adds each node's endpoint. Model names are never cut."""
    title = f"nodes ({len(status.get('nodes', []))})"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold underline")
    table.collapse_padding = True  # one space between columns
    column(table, "node", no_wrap=True)
    if wide:
        column(table, "endpoint", no_wrap=True)
    column(table, "models", overflow="fold")
    for header in ("fresh", "verified"):
        column(table, header, justify="center", no_wrap=True)
    for header in ("load", "seen"):
        column(table, header, justify="right", no_wrap=True)
    for node in status.get("nodes", []):
        endpoint = [str(node.get("endpoint", "")).removeprefix("http://")] if wide else []
        table.add_row(
            short_npub(str(node["pubkey"]), 8, 4),
            *endpoint,
            "\n".join(node.get("models") or []),
            mark(bool(node.get("fresh"))),
            mark(bool(node.get("verified"))),
            f"{node.get('load', 0)}/{node.get('capacity', 0)}",
            _age(node.get("last_seen_s")),
        )
    return table


def _age(seconds: object) -> str:
    return f"{seconds:.0f}s" if isinstance(seconds, int | float) else "?"


@click.command("status")
@target_options
@admin_options
@click.option("--wide", is_flag=True, help="Also show each node's endpoint (wider than 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="Print the router's /status document.")
def status_cmd(
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    admin_token: str | None,
    admin_key: str | None,
    wide: bool,
    as_json: bool,
) -> None:
    """Show the router's identity, uptime and node registry (the public summary without operator credentials)."""
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    auth = resolve_admin(admin_token, admin_key, target.devnet)
    with target.client(auth) as client:
        try:
            status = client.status()
        except FedaiClientError as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
    if target.router_pubkey and status.get("pubkey") != target.router_pubkey:
        fail(f"the router at {target.router_url} is not the pinned one (pubkey {status.get('pubkey')})")
    if as_json:
        print_json(status)
        return
    pubkey = str(status.get("pubkey", ""))
    console.print(f"[bold]router[/bold] {target.router_url}")
    paste_line(f"  npub     {npub(pubkey) if pubkey else '?'}")  # whole, never wrapped: to be pinned elsewhere
    paste_line(f"  pubkey   {pubkey or '?'}")
    console.print(f"  version  {status.get('version', '?')}   uptime {status.get('uptime_s', '?')} s")
    if status.get("view") == "public":
        _print_public(status)
        return
    relays = status.get("relays") or {}
    for url, connected in sorted(relays.items()):
        console.print(f"  relay    {url} {mark(bool(connected))}")
    print_table(_status_table(status, wide=wide), wide=wide)


def _print_public(status: dict[str, Any]) -> None:
    nodes = status.get("nodes") or {}
    relays = status.get("relays") or {}
    console.print(f"  state    {status.get('backpressure', '?')}")
    console.print(
        f"  nodes    {nodes.get('fresh', '?')} fresh of {nodes.get('total', '?')}, "
        f"{status.get('models', '?')} model(s), {status.get('peers', '?')} peer(s)"
    )
    if relays:
        console.print(f"  relays   {relays.get('connected', '?')} of {relays.get('configured', '?')} connected")
    console.print(f"[dim]public summary; {HINT}[/dim]")
