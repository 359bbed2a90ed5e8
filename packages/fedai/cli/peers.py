"""`fedai peers`: the peer routers a router has learned from relays (GET /federation/peers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from fedai.cli.admin import admin_options, ops_hint, resolve_admin
from fedai.cli.client import resolve_target, target_options
from fedai.cli.output import console, fail_fedai, mark, print_json, short_npub
from fedai.sdk import FedaiClientError


def _prices(peer: dict[str, Any]) -> str:
    parts = []
    for job_type, sheet in sorted((peer.get("prices") or {}).items()):
        models = sheet.get("models") or []
        if models:
            cheapest = min(models, key=lambda m: m.get("input_msat", 0) + m.get("output_msat", 0))
            parts.append(
                f"{job_type} from {cheapest.get('input_msat')} in / {cheapest.get('output_msat')} out"
                f" ×{sheet.get('surge', 1)}"
            )
    return "\n".join(parts)


def peers_view(peers: list[dict[str, Any]]) -> Group:
    """One block a peer (fits 80 columns, nothing cut): key, policy, freshness, state and age on one line, then
    its endpoint, models and cheapest prices, each on its own indented line."""
    blocks: list[RenderableType] = [Text.from_markup(f"[bold underline]peers ({len(peers)})[/]")]
    for peer in peers:
        caps = peer.get("caps") or {}
        policy = str(peer.get("policy", "?"))
        head = Text.assemble(
            (short_npub(str(peer["pubkey"]), 8, 4), "bold"),
            "  policy ",
            (policy, "" if policy == "ok" else "yellow"),
            "  fresh ",
            Text.from_markup(mark(bool(peer.get("fresh")))),
            f"  state {peer.get('backpressure') or '-'}  seen {peer.get('last_seen_s', '?')}s ago",
        )
        details = Table.grid(padding=(0, 1), pad_edge=False)
        details.add_column(style="dim", no_wrap=True)
        details.add_column(overflow="fold")
        details.add_row("endpoint", str(caps.get("endpoint", "")).removeprefix("http://") or "-")
        details.add_row("models", ", ".join(caps.get("models") or []) or "-")
        details.add_row("msat/1k", _prices(peer) or "-")
        blocks += [head, Padding(details, (0, 0, 0, 2), expand=False)]
    return Group(*blocks)


@click.command("peers")
@target_options
@admin_options
@click.option("--json", "as_json", is_flag=True, help="Print the router's /federation/peers document.")
def peers_cmd(
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    admin_token: str | None,
    admin_key: str | None,
    as_json: bool,
) -> None:
    """Show the peer routers the router learned from relays: caps, prices, status, policy state.
    Needs operator credentials (the devnet's are found through devnet.json)."""
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    auth = resolve_admin(admin_token, admin_key, target.devnet)
    with target.client(auth) as client:
        try:
            peers = client.peers()
        except FedaiClientError as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err) or ops_hint(err, auth))
    if as_json:
        print_json(peers)
        return
    console.print(peers_view(peers))
