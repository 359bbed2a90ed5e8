"""`fedai route explain`: how the router would route a request right now, node by node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fedai.cli.admin import admin_options, ops_hint, resolve_admin
from fedai.cli.client import resolve_target, target_options
from fedai.cli.output import column, console, fail_fedai, print_json, print_table, short_npub
from fedai.sdk import FedaiClientError


@click.group("route")
def route_group() -> None:
    """Inspect the router's scheduling decisions."""


@route_group.command("explain")
@target_options
@admin_options
@click.option("--model", "-m", required=True, help="Model id or alias.")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--input-tokens", type=click.IntRange(0), default=0, show_default=True)
@click.option("--job-type", help="Job type (default: text-generation).")
@click.option("--max-price-msat", type=click.IntRange(0), help="Price cap.")
@click.option("--wide", is_flag=True, help="Also show the score's parts (wider than 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="Print the router's answer as one JSON document.")
def explain_cmd(
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    admin_token: str | None,
    admin_key: str | None,
    model: str,
    max_tokens: int,
    input_tokens: int,
    job_type: str | None,
    max_price_msat: int | None,
    wide: bool,
    as_json: bool,
) -> None:
    """Each node serving MODEL with its filter verdict and, when eligible, its score (lower wins); --wide adds
    the score's parts.
    Needs operator credentials (the devnet's are found through devnet.json)."""
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    auth = resolve_admin(admin_token, admin_key, target.devnet)
    with target.client(auth) as client:
        try:
            answer = client.explain_route(
                model,
                max_tokens=max_tokens,
                input_tokens=input_tokens,
                job_type=job_type,
                max_price_msat=max_price_msat,
            )
        except FedaiClientError as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err) or ops_hint(err, auth))
    if as_json:
        print_json(answer)
        return
    console.print(f"route for {model!r}: {answer['eligible']} eligible of {len(answer['nodes'])}", highlight=False)
    print_table(explain_table(answer, wide=wide), wide=wide)
    weights = answer["policy"]["weights"]
    console.print("weights: " + ", ".join(f"{k}={v}" for k, v in weights.items()))


PARTS = ("price", "load", "latency", "reliability", "trust", "unverified")


def explain_table(answer: dict[str, Any], *, wide: bool) -> Table:
    """Node, verdict, max price and score (fits 80 columns); `wide` adds the score's parts."""
    table = Table()
    shown = PARTS if wide else ()
    for header in ("node", "verdict", "max msat", "score", *shown):
        column(table, header, justify="left" if header in ("node", "verdict") else "right", no_wrap=header == "node")
    for entry in answer["nodes"]:
        scores = entry.get("parts") or {}
        table.add_row(
            short_npub(entry["node"]),
            "[green]ok[/]" if entry["verdict"] == "ok" else f"[yellow]{entry['verdict']}[/]",
            "" if entry["max_price_msat"] is None else str(entry["max_price_msat"]),
            f"{entry['score']:.3f}" if "score" in entry else "",
            *(f"{scores[p]:.3f}" if p in scores else "" for p in shown),
        )
    return table
