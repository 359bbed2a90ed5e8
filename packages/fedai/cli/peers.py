"""`fedai peers`: the peer routers a router has learned from relays (GET /federation/peers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx
from rich.table import Table

from fedai.cli.client import resolve_target, target_options
from fedai.cli.output import console, fail, mark, print_json, short_npub


def fetch_peers(router_url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The router's `/federation/peers` document; raises `click.ClickException` on any failure."""
    try:
        response = httpx.get(router_url.rstrip("/") + "/federation/peers", timeout=timeout)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"router at {router_url} unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise click.ClickException(f"router answered {response.status_code} for /federation/peers")
    try:
        document = response.json()
    except ValueError:
        raise click.ClickException("router answered /federation/peers with something that is not JSON") from None
    if not isinstance(document, list):
        raise click.ClickException("router answered /federation/peers with something that is not a list")
    return [peer for peer in document if isinstance(peer, dict)]


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
    table = Table(title=f"peers ({len(peers)})", title_justify="left", box=None, pad_edge=False,
                  header_style="bold underline")  # fmt: skip
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
@click.option("--json", "as_json", is_flag=True, help="Print the router's /federation/peers document.")
def peers_cmd(
    router: str | None, router_pubkey: str | None, key: str | None, devnet_dir: Path | None, as_json: bool
) -> None:
    """Show the peer routers the router learned from relays: caps, prices, status, policy state."""
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    try:
        peers = fetch_peers(target.router_url)
    except click.ClickException as exc:
        fail(exc.message)
    if as_json:
        print_json(peers)
        return
    console.print(peers_table(peers))
