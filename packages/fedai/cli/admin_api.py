"""`fedai admin …`: the router's admin API (runbooks/admin.md), every call a NIP-98 event signed with
`--admin-key` (a key in the router's ROUTER_ADMIN_KEYS). Tables fit 80 columns; `--json` prints the router's
document as it came."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.table import Table

from fedai.cli.client import resolve_target
from fedai.cli.earnings import ROLES, earnings_table, print_totals
from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.output import column, console, fail, fail_fedai, paste_line, print_json, print_table, short_npub
from fedai.payments.earnings import MAX_DAYS
from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import Keys, parse_pubkey
from fedai.protocol.nip98 import auth_header
from fedai.sdk.errors import RouterTimeout, RouterUnreachable, error_from_response

F = TypeVar("F", bound=Callable[..., Any])
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class AdminCall:
    """The router's base URL (as it names itself in ROUTER_PUBLIC_URL) and the operator key signing each call."""

    url: str
    keys: Keys
    as_json: bool

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        content = json.dumps(body).encode() if body is not None else b""
        headers = {"Authorization": auth_header(self.keys, method, url, content, nonce=True)}
        if content:
            headers["Content-Type"] = "application/json"
        try:
            response = httpx.request(method, url, content=content, headers=headers, timeout=TIMEOUT_S)
        except httpx.TimeoutException:
            fail_fedai(RouterTimeout(f"no answer from {self.url} in {TIMEOUT_S:g} s"), as_json=self.as_json)
        except httpx.HTTPError as exc:
            fail_fedai(RouterUnreachable(f"cannot reach {self.url} ({type(exc).__name__})"), as_json=self.as_json)
        if response.status_code != 200:
            fail_fedai(error_from_response(response.status_code, response.content), as_json=self.as_json)
        return response.json()


def admin_api_options(func: F) -> F:
    options = [
        click.option("--router", envvar="FEDAI_ROUTER", help="Router base URL (env FEDAI_ROUTER)."),
        click.option("--devnet", "devnet_dir", type=click.Path(path_type=Path), help="Use this devnet data dir."),
        click.option(
            "--admin-key",
            envvar="FEDAI_ADMIN_KEY",
            required=True,
            help="Operator secret key (nsec/hex) or a file holding it; in ROUTER_ADMIN_KEYS (env FEDAI_ADMIN_KEY).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the router's JSON document."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def connect(router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> AdminCall:
    target = resolve_target(router, None, None, devnet_dir)
    try:
        keys = load_secret(admin_key)
    except KeyInputError as exc:
        fail(f"--admin-key: {exc}", code=2)
    return AdminCall(target.router_url.rstrip("/"), keys, as_json)


def hex_key(value: str) -> str:
    try:
        return parse_pubkey(value)
    except KeyFormatError as exc:
        raise click.BadParameter(str(exc)) from None


def page_query(limit: int, before: str | None, **extra: str | None) -> httpx.QueryParams:
    """The query of one page of a listing: `limit`, the `before` cursor if any, and the filters given."""
    given = {k: v for k, v in extra.items() if v is not None}
    return httpx.QueryParams({"limit": limit, **({"before": before} if before else {}), **given})


def next_page(doc: dict[str, Any]) -> None:
    """The option that reads the next page, when there is one."""
    if doc["next"]:
        paste_line(f"next page: --before '{doc['next']}'")


def show(call: AdminCall, document: Any, render: Callable[[Any], None]) -> None:
    if call.as_json:
        print_json(document)
    else:
        render(document)


@click.group("admin")
def admin_group() -> None:
    """The router's admin API (NIP-98 signed with --admin-key): nodes, peers, API keys, fee, records, earnings,
    payments, audit."""


@admin_group.command("nodes")
@admin_api_options
def nodes_cmd(router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> None:
    """List the registered nodes with their operator flags (drained, banned)."""
    call = connect(router, devnet_dir, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"nodes ({len(doc['nodes'])})")
        for header in ("node", "fresh", "load", "drained", "banned"):
            column(table, header)
        for n in doc["nodes"] + doc["held_unregistered"]:
            load = f"{n['load']}/{n['capacity']}" if "load" in n else "-"
            fresh = "yes" if n.get("fresh") else "no"
            flags = ("yes" if n["drained"] else "", "yes" if n["banned"] else "")
            table.add_row(short_npub(n["pubkey"]), fresh, load, *flags)
        print_table(table)

    show(call, call("GET", "/admin/api/nodes"), render)


@admin_group.command("node")
@click.argument("action", type=click.Choice(["drain", "undrain", "ban", "unban"]))
@click.argument("pubkey", callback=lambda _c, _p, v: hex_key(v))
@admin_api_options
def node_cmd(
    action: str, pubkey: str, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """Drain (not scheduled) or ban (not scheduled, heartbeats refused) a node, or undo it."""
    call = connect(router, devnet_dir, admin_key, as_json)
    doc = call("POST", f"/admin/api/nodes/{pubkey}/{action}")
    show(call, doc, lambda d: console.print(f"{short_npub(pubkey)}: drained={d['drained']} banned={d['banned']}"))


@admin_group.command("peers")
@admin_api_options
def peers_cmd(router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> None:
    """The operator's peer rules and every peer router learned, with its policy state."""
    call = connect(router, devnet_dir, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"peers ({len(doc['peers'])}), rules ({len(doc['rules'])})")
        for header in ("peer", "rule", "policy"):
            column(table, header)
        states = {p["pubkey"]: p.get("policy", "?") for p in doc["peers"]}
        for key in sorted(states.keys() | doc["rules"].keys()):
            table.add_row(short_npub(key), doc["rules"].get(key, "-"), states.get(key, "not learned"))
        print_table(table)

    show(call, call("GET", "/admin/api/peers"), render)


@admin_group.command("peer")
@click.argument("action", type=click.Choice(["allow", "block", "mute", "clear"]))
@click.argument("pubkey", callback=lambda _c, _p, v: hex_key(v))
@admin_api_options
def peer_cmd(
    action: str, pubkey: str, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """Allow, block or mute a peer router (overrides ROUTER_PEER_* for it); `clear` drops the rule."""
    call = connect(router, devnet_dir, admin_key, as_json)
    doc = call("POST", f"/admin/api/peers/{pubkey}/{action}")
    show(call, doc, lambda d: console.print(f"{short_npub(pubkey)}: rule {d['rule'] or 'none (environment)'}"))


@admin_group.group("apikey")
def apikey_group() -> None:
    """API keys for the OpenAI edge, stored hashed in the router's database (beside ROUTER_API_KEYS)."""


@apikey_group.command("list")
@admin_api_options
def apikey_list_cmd(router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> None:
    """Every key made through the admin API (id, client, label, created, revoked); never the keys."""
    call = connect(router, devnet_dir, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"API keys ({len(doc['api_keys'])})")
        for header in ("id", "client", "label", "created", "revoked"):
            column(table, header)
        for k in doc["api_keys"]:
            revoked = (k["revoked_at"] or "")[:10]
            table.add_row(k["id"], short_npub(k["client"]), k["label"], k["created_at"][:10], revoked)
        print_table(table)

    show(call, call("GET", "/admin/api/apikeys"), render)


@apikey_group.command("create")
@click.option("--client", "client", required=True, callback=lambda _c, _p, v: hex_key(v), help="The key's client.")
@click.option("--label", default="", help="A note for the listing (at most 64 characters).")
@admin_api_options
def apikey_create_cmd(
    client: str, label: str, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """Make a key that acts as --client on the OpenAI edge; it is printed once and never stored."""
    call = connect(router, devnet_dir, admin_key, as_json)
    doc = call("POST", "/admin/api/apikeys", {"client": client, "label": label})
    if as_json:
        print_json(doc)
        return
    console.print(f"API key {doc['id']} for {short_npub(client)} (shown once; revoke with its id):")
    paste_line(doc["key"])


@apikey_group.command("revoke")
@click.argument("key_id")
@admin_api_options
def apikey_revoke_cmd(key_id: str, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> None:
    """Revoke a key by its id (`fedai admin apikey list`); every replica refuses it within a second or so."""
    call = connect(router, devnet_dir, admin_key, as_json)
    show(call, call("POST", f"/admin/api/apikeys/{key_id}/revoke"), lambda d: console.print(f"revoked {d['id']}"))


@admin_group.command("fee")
@click.option("--base-msat", type=click.IntRange(0), help="Router fee per quote, msat.")
@click.option("--ppm", type=click.IntRange(0, 1_000_000), help="Router fee, parts per million of the node price.")
@click.option("--reset", is_flag=True, help="Back to ROUTER_FEE_BASE_MSAT / ROUTER_FEE_PPM.")
@admin_api_options
def fee_cmd(
    base_msat: int | None,
    ppm: int | None,
    reset: bool,
    router: str | None,
    devnet_dir: Path | None,
    admin_key: str,
    as_json: bool,
) -> None:
    """Show the router fee in quotes, or set it (--base-msat, --ppm) or --reset it to the environment's."""
    call = connect(router, devnet_dir, admin_key, as_json)
    if reset:
        doc = call("POST", "/admin/api/fees", {"fee_base_msat": None, "fee_ppm": None})
    elif base_msat is not None or ppm is not None:
        values = {k: v for k, v in (("fee_base_msat", base_msat), ("fee_ppm", ppm)) if v is not None}
        doc = call("POST", "/admin/api/fees", values)
    else:
        doc = call("GET", "/admin/api/fees")
    env = doc["env"]
    show(
        call,
        doc,
        lambda d: console.print(
            f"fee: {d['fee_base_msat']} msat + {d['fee_ppm']} ppm "
            f"(environment: {env['fee_base_msat']} msat + {env['fee_ppm']} ppm)"
        ),
    )


@admin_group.command("metering")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--before", help="The `next` cursor of the previous page.")
@admin_api_options
def metering_cmd(
    limit: int, before: str | None, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """Recent verified metering records, newest first (no prompts or outputs: the router keeps none)."""
    call = connect(router, devnet_dir, admin_key, as_json)
    query = httpx.QueryParams({"limit": limit, **({"before": before} if before else {})})

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"metering records ({len(doc['records'])})")
        for header in ("at", "client", "model", "tokens", "msat"):
            column(table, header)
        for r in doc["records"]:
            tokens = f"{r['input_tokens']}+{r['output_tokens']}"
            table.add_row(
                r["created_at"][11:19], short_npub(r["client"], 6, 4), r["model"], tokens, str(r["price_msat"])
            )
        print_table(table)
        if doc["next"]:
            paste_line(f"next page: --before '{doc['next']}'")

    show(call, call("GET", f"/admin/api/metering?{query}"), render)


@admin_group.command("audit")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--before", help="The `next` cursor of the previous page.")
@admin_api_options
def audit_cmd(
    limit: int, before: str | None, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """The audit log, newest first: who changed what, when."""
    show_audit(connect(router, devnet_dir, admin_key, as_json), limit, before, actor="operator")


def show_audit(call: AdminCall, limit: int, before: str | None, *, actor: str) -> None:
    """One page of an admin audit log (the router's or a node's: the same shape), `actor` naming its column."""
    query = httpx.QueryParams({"limit": limit, **({"before": before} if before else {})})

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"audit ({len(doc['entries'])})")
        for header in ("id", "at", actor, "action", "target"):
            column(table, header)
        for e in doc["entries"]:
            target = short_npub(e["target"], 6, 4) if len(e["target"]) == 64 else e["target"]
            table.add_row(str(e["id"]), e["at"][:19], short_npub(e["actor"], 6, 4), e["action"], target)
        print_table(table)
        if doc["next"]:
            paste_line(f"next page: --before {doc['next']}")

    show(call, call("GET", f"/admin/api/audit?{query}"), render)


@admin_group.command("receipts")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--before", help="The `next` cursor of the previous page.")
@admin_api_options
def receipts_cmd(
    limit: int, before: str | None, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool
) -> None:
    """Federation jobs, newest first: offloaded (requester) or served for a peer (provider), with receipts."""
    call = connect(router, devnet_dir, admin_key, as_json)
    query = httpx.QueryParams({"limit": limit, **({"before": before} if before else {})})

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"federation jobs ({len(doc['jobs'])})")
        for header in ("at", "role", "peer", "status", "msat", "receipt"):
            column(table, header)
        for j in doc["jobs"]:
            receipt = "yes" if j["receipt_id"] else "-"
            peer = short_npub(j["peer"], 6, 4)
            table.add_row(j["created_at"][11:19], j["role"], peer, j["status"], str(j["price_msat"]), receipt)
        print_table(table)
        if doc["next"]:
            paste_line(f"next page: --before '{doc['next']}'")

    show(call, call("GET", f"/admin/api/receipts?{query}"), render)


@admin_group.command("earnings")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=30, show_default=True, help="How far back.")
@admin_api_options
def earnings_cmd(days: int, router: str | None, devnet_dir: Path | None, admin_key: str, as_json: bool) -> None:
    """The router's fee earned by UTC day and model, net of refunds paid, and the node and provider shares it
    brokered (as `fedai earnings --role router`, through the admin API)."""
    call = connect(router, devnet_dir, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        if not doc["rows"]:
            console.print(f"nothing consumed in the last {days} day(s)")
            return
        print_table(earnings_table(doc["rows"], "router"))
        print_totals(doc["rows"])

    show(call, call("GET", f"/admin/api/earnings?{httpx.QueryParams({'days': days})}"), render)


@admin_group.command("payments")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--before", help="The `next` cursor of the previous page.")
@click.option("--state", type=click.Choice(["issued", "consumed", "expired"]), help="Only requests in this state.")
@admin_api_options
def payments_cmd(
    limit: int,
    before: str | None,
    state: str | None,
    router: str | None,
    devnet_dir: Path | None,
    admin_key: str,
    as_json: bool,
) -> None:
    """Recent payment requests, newest first: client, model, total, each payee's state and refund (never an
    invoice, a preimage or a refund destination)."""
    call = connect(router, devnet_dir, admin_key, as_json)

    def render(doc: dict[str, Any]) -> None:
        table = Table(title=f"payment requests ({len(doc['payments'])})", box=None, header_style="bold underline")
        table.collapse_padding = True
        for header in ("at (UTC)", "client", "model", "state", "msat", "payees (refund)"):
            column(table, header, overflow="fold", justify="right" if header == "msat" else "left")
        for p in doc["payments"]:
            payees = "\n".join(_payee_line(x) for x in p["payees"])
            at, client = p["created_at"][5:16].replace("T", " "), short_npub(p["client"], 4, 4)
            table.add_row(at, client, p["model"] or "?", p["state"], str(p["total_msat"]), payees)
        print_table(table)
        next_page(doc)

    show(call, call("GET", f"/admin/api/payments?{page_query(limit, before, state=state)}"), render)


def _payee_line(payee: dict[str, Any]) -> str:
    """`fee consumed` and, once answered, its refund on the next line: `refund paid 120`, `refund stated 80`."""
    role = ROLES.get(payee["role"], payee["role"]).split(" ")[0]
    refund = payee["refund"]
    told = f"\n refund {refund['state']} {refund['refund_msat']}" if refund and refund["state"] != "none" else ""
    return f"{role} {payee['state']}{told}"
