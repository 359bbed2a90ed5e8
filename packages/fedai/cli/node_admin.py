"""`fedai node admin …`: a node's admin API (runbooks/admin.md#node), every call a NIP-98 event signed with
`--admin-key` (a key in the node's NODE_ADMIN_KEYS) for `--node` (the node's NODE_ENDPOINT). The conventions of
`fedai admin`: tables fit 80 columns, `--json` prints the node's document as it came."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.table import Table

from fedai.cli.admin_api import AdminCall, hex_key, show, show_audit
from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.output import column, console, fail, print_table, short_npub
from fedai.protocol.messages import MAX_RATE_MSAT

F = TypeVar("F", bound=Callable[..., Any])


def node_admin_options(func: F) -> F:
    options = [
        click.option(
            "--node", "node_url", envvar="FEDAI_NODE", required=True, help="Node base URL: its NODE_ENDPOINT."
        ),
        click.option(
            "--admin-key",
            envvar="FEDAI_ADMIN_KEY",
            required=True,
            help="Admin secret key (nsec/hex) or a file holding it; in NODE_ADMIN_KEYS (env FEDAI_ADMIN_KEY).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the node's JSON document."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def connect(node_url: str, admin_key: str, as_json: bool) -> AdminCall:
    try:
        keys = load_secret(admin_key)
    except KeyInputError as exc:
        fail(f"--admin-key: {exc}", code=2)
    return AdminCall(node_url.rstrip("/"), keys, as_json)


def rates(pricing: dict[str, int]) -> str:
    return f"{pricing['input_msat']} in / {pricing['output_msat']} out"


@click.group("admin")
def node_admin_group() -> None:
    """A node's admin API (NIP-98 signed with --admin-key): status, drain, prices, routers, earnings, audit."""


@node_admin_group.command("status")
@node_admin_options
def status_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """Models and prices, runner health, in flight, draining, and the routers it heartbeats to."""
    call = connect(node_url, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        draining = "draining" if doc["draining"] else "serving"
        runner = "ok" if doc["runner_ok"] else "DOWN"
        console.print(
            f"node {short_npub(doc['pubkey'])} {doc['version']}: {draining}, runner {doc['runner']} {runner}, "
            f"{doc['in_flight']}/{doc['capacity']} in flight"
        )
        table = Table(title=f"models ({len(doc['models'])}), msat per 1k tokens")
        for header in ("model", "price"):
            column(table, header)
        for m in doc["models"]:
            table.add_row(m["id"], rates(m["pricing"]))
        print_table(table)
        routers = Table(title=f"routers ({len(doc['routers'])})")
        for header in ("endpoint", "key", "last beat", "refusals"):
            column(routers, header)
        for r in doc["routers"]:
            key = short_npub(r["pubkey"], 6, 4) if r["pubkey"] else "-"
            routers.add_row(r["endpoint"], key, r["last_result"] or "-", str(r["refusals"]))
        print_table(routers)

    show(call, call("GET", "/admin/api/status"), render)


@node_admin_group.command("drain")
@node_admin_options
def drain_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """Stop taking new requests (routers told at once); requests in flight finish; the node keeps running."""
    call = connect(node_url, admin_key, as_json)
    doc = call("POST", "/admin/api/drain")
    show(call, doc, lambda d: console.print(f"draining ({d['in_flight']} in flight); `resume` to take requests again"))


@node_admin_group.command("resume")
@node_admin_options
def resume_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """Take new requests again after `drain` (routers told at once)."""
    call = connect(node_url, admin_key, as_json)
    show(call, call("POST", "/admin/api/resume"), lambda d: console.print("serving"))


@node_admin_group.command("prices")
@node_admin_options
def prices_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """Each model's price now, and which were set here (the rest are NODE_PRICE_*)."""
    call = connect(node_url, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"prices, msat per 1k tokens (environment: {rates(doc['env'])})")
        for header in ("model", "price", "set here"):
            column(table, header)
        for model, pricing in doc["models"].items():
            table.add_row(model, rates(pricing), "yes" if model in doc["set"] else "")
        print_table(table)

    show(call, call("GET", "/admin/api/prices"), render)


@node_admin_group.command("price")
@click.argument("model")
@click.option("--input-msat", type=click.IntRange(0, MAX_RATE_MSAT), help="Per 1k input tokens.")
@click.option("--output-msat", type=click.IntRange(0, MAX_RATE_MSAT), help="Per 1k output tokens.")
@click.option("--reset", is_flag=True, help="Back to NODE_PRICE_INPUT_MSAT / NODE_PRICE_OUTPUT_MSAT.")
@node_admin_options
def price_cmd(
    model: str,
    input_msat: int | None,
    output_msat: int | None,
    reset: bool,
    node_url: str,
    admin_key: str,
    as_json: bool,
) -> None:
    """Set MODEL's price (both --input-msat and --output-msat) or --reset it; routers hear it at once."""
    if reset == (input_msat is not None or output_msat is not None) or (
        not reset and (input_msat is None or output_msat is None)
    ):
        fail("give --input-msat and --output-msat, or --reset", code=2)
    call = connect(node_url, admin_key, as_json)
    body = {"input_msat": input_msat, "output_msat": output_msat}  # both None: --reset
    doc = call("POST", f"/admin/api/prices/{model}", body)  # as the node lists it (a NIP-98 URL is not re-encoded)
    show(call, doc, lambda d: console.print(f"{d['model']}: {rates(d['pricing'])} msat per 1k tokens"))


@node_admin_group.command("routers")
@node_admin_options
def routers_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """The routers the node accepts: ROUTER_PUBLIC_KEY, with the rules set here."""
    call = connect(node_url, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"routers accepted ({len(doc['accepted'])})")
        for header in ("router", "configured", "rule", "accepted"):
            column(table, header)
        for key in sorted(set(doc["configured"]) | doc["rules"].keys()):
            configured = "yes" if key in doc["configured"] else ""
            accepted = "yes" if key in doc["accepted"] else "no"
            table.add_row(short_npub(key), configured, doc["rules"].get(key, "-"), accepted)
        print_table(table)

    show(call, call("GET", "/admin/api/routers"), render)


@node_admin_group.command("router")
@click.argument("action", type=click.Choice(["allow", "block", "clear"]))
@click.argument("pubkey", callback=lambda _c, _p, v: hex_key(v))
@node_admin_options
def router_cmd(action: str, pubkey: str, node_url: str, admin_key: str, as_json: bool) -> None:
    """Allow a router beside ROUTER_PUBLIC_KEY, block one, or clear the rule."""
    call = connect(node_url, admin_key, as_json)
    doc = call("POST", f"/admin/api/routers/{pubkey}/{action}")
    accepted = "accepted" if doc["accepted"] else "refused"
    show(call, doc, lambda d: console.print(f"{short_npub(pubkey)}: rule {d['rule'] or 'none'}, {accepted}"))


@node_admin_group.command("earnings")
@node_admin_options
def earnings_cmd(node_url: str, admin_key: str, as_json: bool) -> None:
    """What the node was paid (its claims) and refunded (unused shares), by state."""
    call = connect(node_url, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"earnings: {doc['earned_msat']} msat kept")
        for header in ("what", "state", "count", "msat"):
            column(table, header)
        for what in ("claims", "refunds"):
            for state, row in doc[what].items():
                table.add_row(what, state, str(row["count"]), str(row["msat"]))
        print_table(table)

    show(call, call("GET", "/admin/api/earnings"), render)


@node_admin_group.command("audit")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--before", help="The `next` cursor of the previous page.")
@node_admin_options
def audit_cmd(limit: int, before: str | None, node_url: str, admin_key: str, as_json: bool) -> None:
    """The node's audit log, newest first: who changed what, when."""
    show_audit(connect(node_url, admin_key, as_json), limit, before, actor="admin")
