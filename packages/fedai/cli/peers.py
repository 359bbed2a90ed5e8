"""`fedai peers`: the peer routers a router has learned from relays (GET /federation/peers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

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
                f"{job_type}: from {cheapest.get('input_msat')}/{cheapest.get('output_msat')} ×{sheet.get('surge', 1)}"
            )
    return "; ".join(parts)


def peers_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(
        title=f"peers ({len(peers)})", title_justify="left", box=None, pad_edge=False, header_style="bold underline"
    )
    for column in ("peer", "policy", "fresh", "state", "endpoint", "models", "msat/1k in/out", "seen"):
        table.add_column(column, no_wrap=column in ("peer", "endpoint"))
    for peer in peers:
        caps = peer.get("caps") or {}
        policy = str(peer.get("policy", "?"))
        table.add_row(
            short_npub(str(peer["pubkey"]), 8, 4),
            policy if policy == "ok" else f"[yellow]{policy}[/]",
            mark(bool(peer.get("fresh"))),
            str(peer.get("backpressure") or "-"),
            str(caps.get("endpoint", "")).removeprefix("http://"),
            ", ".join(caps.get("models") or []),
            _prices(peer),
            f"{peer.get('last_seen_s', '?')}s",
        )
    return table


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
    console.print(peers_table(peers))
