"""`fedai quote|infer|status`: talk to a router as a signing client; defaults come from a running devnet."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from rich.table import Table
from rich.text import Text

from fedai.cli.admin import HINT, OpsAuth, admin_options, resolve_admin
from fedai.cli.chain_view import print_chain
from fedai.cli.devnet_file import DevnetFileError, DevnetInfo, default_devnet, read_devnet
from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.output import console, fail, fail_fedai, mark, print_json, short_npub
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


def _default_model(client: Client) -> str:
    """The first model the router can serve now, per its public `/v1/models`."""
    models = client.models()
    if models:
        return models[0]
    raise FedaiError(ErrorCode.UNKNOWN_MODEL, "the router lists no node with a model; pass --model")


def _parse_messages(text: str) -> list[dict[str, str]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--messages") from None
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )
    if not ok:
        expected = 'expected a non-empty JSON array of {"role", "content"} objects'
        raise click.BadParameter(expected, param_hint="--messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


@click.command("infer")
@click.argument("prompt_arg", metavar="[PROMPT]", required=False)
@target_options
@click.option("--model", "-m", help="Model id (default: the first model the router lists).")
@click.option("--max-tokens", type=click.IntRange(1, 1_000_000), default=256, show_default=True)
@click.option("--prompt", "prompt_opt", help="A raw completion prompt, no chat template ('-' reads stdin).")
@click.option("--messages", help='Chat messages as JSON: [{"role": "user", "content": "…"}].')
@click.option("--stream", is_flag=True, help="Print the answer as it is generated (every chunk verified).")
@click.option("--temperature", type=click.FloatRange(0, 2))
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Print the chain summary as one JSON document.")
def infer_cmd(
    prompt_arg: str | None,
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    model: str | None,
    max_tokens: int,
    prompt_opt: str | None,
    messages: str | None,
    stream: bool,
    temperature: float | None,
    top_p: float | None,
    as_json: bool,
) -> None:
    """Sign an inference request, send it through the router and verify the returned chain.

    PROMPT is sent as one user chat message (the model's chat template applies); --prompt sends a raw
    completion prompt; --messages a whole conversation.
    """
    given = [v for v in (prompt_arg, prompt_opt, messages) if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of PROMPT, --prompt or --messages")
    prompt = prompt_opt
    if prompt == "-":
        prompt = sys.stdin.read()
    chat = _parse_messages(messages) if messages is not None else None
    if prompt_arg is not None:
        chat = [{"role": "user", "content": sys.stdin.read() if prompt_arg == "-" else prompt_arg}]
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if top_p is not None:
        options["top_p"] = top_p
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    with target.client() as client:
        try:
            chosen = model or _default_model(client)
            if stream and not as_json:
                with client.stream(chosen, prompt, messages=chat, max_tokens=max_tokens, **options) as live:
                    for delta in live:
                        console.print(Text(delta), end="")
                    console.print()
                    chain = live.chain
            else:
                chain = client.infer(chosen, prompt, messages=chat, max_tokens=max_tokens, **options)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
    if as_json:
        print_json({**chain.summary(), "verified": True})
        return
    print_chain(console, chain)


@click.command("quote")
@target_options
@click.option("--model", "-m", help="Model id (default: the first model the router lists).")
@click.option("--max-tokens", type=click.IntRange(1, 1_000_000), default=256, show_default=True)
@click.option("--prompt", help="Price this prompt.")
@click.option("--input-tokens", type=click.IntRange(0), help="Price this many input tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the signed quote as one JSON document.")
def quote_cmd(
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    model: str | None,
    max_tokens: int,
    prompt: str | None,
    input_tokens: int | None,
    as_json: bool,
) -> None:
    """Ask the router for a signed price quote."""
    if (prompt is None) == (input_tokens is None):
        raise click.UsageError("give exactly one of --prompt or --input-tokens")
    fields: dict[str, Any] = {"prompt": prompt} if prompt is not None else {"input_tokens": input_tokens}
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    with target.client() as client:
        try:
            chosen = model or _default_model(client)
            quote = client.quote(chosen, max_tokens=max_tokens, **fields)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
    document: dict[str, Any] = msgspec.to_builtins(quote.quote)
    document["event"] = quote.event.id
    document["router"] = quote.event.pubkey
    if as_json:
        print_json(document)
        return
    q = quote.quote
    table = Table(title="quote (signed by the router)", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("quote id", q.quote_id)
    table.add_row("model", q.model)
    table.add_row("node", short_npub(q.node))
    table.add_row("tokens", f"{q.input_tokens} in / up to {q.max_output_tokens} out")
    table.add_row("input", f"{q.price.input_msat} msat")
    table.add_row("output (max)", f"{q.price.output_msat} msat")
    table.add_row("router fee", f"{q.price.router_fee_msat} msat")
    table.add_row("total (max)", f"[bold]{q.price.total_msat} msat[/bold]")
    table.add_row("expires", f"in {max(0, q.expires_at - int(time.time()))} s")
    table.add_row("event", quote.event.id)
    console.print(table)


def _status_table(status: dict[str, Any]) -> Table:
    title = f"nodes ({len(status.get('nodes', []))})"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold underline")
    table.add_column("node", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("models")
    table.add_column("fresh", justify="center")
    table.add_column("verified", justify="center")
    table.add_column("load", justify="right")
    table.add_column("seen", justify="right")
    for node in status.get("nodes", []):
        endpoint = str(node.get("endpoint", ""))
        table.add_row(
            short_npub(str(node["pubkey"]), 8, 4),
            endpoint.removeprefix("http://"),
            ", ".join(node.get("models") or []),
            mark(bool(node.get("fresh"))),
            mark(bool(node.get("verified"))),
            f"{node.get('load', 0)}/{node.get('capacity', 0)}",
            f"{node.get('last_seen_s', '?')}s",
        )
    return table


@click.command("status")
@target_options
@admin_options
@click.option("--json", "as_json", is_flag=True, help="Print the router's /status document.")
def status_cmd(
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    admin_token: str | None,
    admin_key: str | None,
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
    console.print(f"  npub     {npub(pubkey) if pubkey else '?'}")
    console.print(f"  pubkey   {pubkey or '?'}")
    console.print(f"  version  {status.get('version', '?')}   uptime {status.get('uptime_s', '?')} s")
    if status.get("view") == "public":
        _print_public(status)
        return
    relays = status.get("relays") or {}
    for url, connected in sorted(relays.items()):
        console.print(f"  relay    {url} {mark(bool(connected))}")
    console.print(_status_table(status))


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
