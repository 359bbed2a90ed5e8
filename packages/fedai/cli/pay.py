"""`fedai pay QUOTE_ID` and what `fedai infer --pay` shares with it (docs/payments.md#paying-from-the-command-line).

Paying goes: check the wallet spec (before anything is asked of the router), `POST /pay`, verify the payment
request (the router's signature, this client and quote, each payee's own signed invoice, every BOLT11 string),
show who gets what and ask for a yes (refused when nobody can answer: stdin is not a terminal and no --yes),
pay each invoice from the client's wallet, print the proof. Everything for people goes to stderr, so stdout
holds only the proof (one unwrapped line) or, with --json, one JSON document.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from fedai.cli.client import Target, resolve_target, target_options, warn_if_anonymous
from fedai.cli.extras import needs_extra
from fedai.cli.output import console, err_console, fail, fail_fedai, paste_line, print_json, short_id, short_npub
from fedai.cli.payment_view import refund_line
from fedai.protocol.envelope import Opened
from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import PaymentProof, PaymentRequest
from fedai.sdk import FedaiClientError
from fedai.sdk.pay import DEFAULT_MAX_FEE_MSAT
from fedai.service.config import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

ROLE_NAMES = {"node": "node share", "router_fee": "router fee", "provider": "provider"}


def wallet_options(func: F) -> F:
    """--wallet, --network, --max-fee-msat and --yes, shared by `fedai pay` and `fedai infer --pay`."""
    options = [
        click.option("--wallet", envvar="FEDAI_WALLET", help="Your wallet: a URI or a file (env FEDAI_WALLET)."),
        click.option(
            "--network",
            envvar="FEDAI_LN_NETWORK",
            default="bitcoin",
            show_default=True,
            help="Lightning network the invoices must be for (env FEDAI_LN_NETWORK).",
        ),
        click.option(
            "--max-fee-msat",
            type=click.IntRange(0),
            default=DEFAULT_MAX_FEE_MSAT,
            show_default=True,
            help="Routing fees your wallet may pay per invoice.",
        ),
        click.option("--yes", "-y", is_flag=True, help="Pay without asking (needed when not in a terminal)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def check_wallet(spec: str | None, network: str) -> str:
    """The wallet spec and network, checked before anything is sent (exit 2 naming what to fix)."""
    from fedai.payments.config import check_network, check_wallet_spec  # the `pay` extra

    if not spec:
        fail("paying needs your wallet: pass --wallet URI-or-file (or set FEDAI_WALLET)", code=2)
    try:
        check_network(network, "--network")
        return check_wallet_spec(spec, "--wallet")
    except ConfigError as exc:
        fail(f"{exc} (docs/payments.md#wallet-uris)", code=2)


def payee_lines(opened: Opened[PaymentRequest], max_fee_msat: int, now: float | None = None) -> list[str]:
    """Who gets what, one payee a line (80 columns), the total and the expiry."""
    request = opened.payload
    at = time.time() if now is None else now
    lines = [f"payment request {short_id(opened.event.id)} (signed by the router, verified)"]
    for payee in request.payees:
        role = ROLE_NAMES.get(payee.role, payee.role)
        who = short_npub(payee.payee)
        lines.append(f"  {role:<11} {who}  {payee.amount_msat:>9} msat  {short_id(payee.payment_hash)}")
    fees = max_fee_msat * len(request.payees)
    lines.append(f"  {'total':<11} {request.total_msat} msat (+ routing fees up to {fees} msat)")
    lines.append(f"  {'expires':<11} in {max(0, request.expires_at - int(at))} s")
    return lines


def confirm_total(opened: Opened[PaymentRequest], max_fee_msat: int, *, yes: bool) -> None:
    """Show who gets what on stderr; pay only on --yes or a yes typed at a terminal."""
    for line in payee_lines(opened, max_fee_msat):
        err_console.print(line, highlight=False)
    if yes:
        return
    total = opened.payload.total_msat
    if not sys.stdin.isatty():
        fail(f"not paying {total} msat without a confirmation: pass --yes (stdin is not a terminal)", code=2)
    if not click.confirm(f"pay {total} msat from your wallet?", default=False, err=True):
        fail("not paid: declined", code=1)


def pay_now(opened: Opened[PaymentRequest], spec: str, max_fee_msat: int) -> PaymentProof:
    """Pay every invoice of a verified payment request from the wallet `spec` names."""
    from fedai.sdk.pay import pay_with_spec  # imports the wallet backends: the `pay` extra

    return asyncio.run(pay_with_spec(opened, spec, max_fee_msat=max_fee_msat))


def proof_text(proof: PaymentProof) -> str:
    """The proof as one line of JSON: what `fedai infer --proof` takes back."""
    return msgspec.json.encode(proof).decode()


def request_document(opened: Opened[PaymentRequest]) -> dict[str, Any]:
    return {"id": opened.event.id, **msgspec.to_builtins(opened.payload), "router": opened.event.pubkey}


def _proof_hint(quote_id: str) -> None:
    err_console.print("[dim]use it once (same --key, --model, --max-tokens and prompt as the quote):[/dim]")
    err_console.print(f'[dim]  fedai infer --quote {quote_id} --proof PROOF "…"[/dim]', highlight=False)


@click.command("pay")
@click.argument("quote_id")
@target_options
@wallet_options
@click.option("--json", "as_json", is_flag=True, help="Print the payment request and the proof as JSON.")
@needs_extra("pay")
def pay_cmd(
    quote_id: str,
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    wallet: str | None,
    network: str,
    max_fee_msat: int,
    yes: bool,
    as_json: bool,
) -> None:
    """Pay the quote QUOTE_ID (from `fedai quote`, with the same --key) from your wallet; prints the proof for
    `fedai infer --quote QUOTE_ID --proof PROOF`."""
    spec = check_wallet(wallet, network)
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    warn_if_anonymous(target)
    opened, proof = _pay(target, quote_id, spec, network, max_fee_msat, yes=yes, as_json=as_json)
    if as_json:
        print_json({"payment_request": request_document(opened), "proof": msgspec.to_builtins(proof)})
        return
    err_console.print(f"paid {opened.payload.total_msat} msat; the proof:", highlight=False)
    paste_line(proof_text(proof))  # whole, one line, on stdout: PROOF=$(fedai pay … --yes)
    _proof_hint(quote_id)


def _pay(
    target: Target, quote_id: str, spec: str, network: str, max_fee_msat: int, *, yes: bool, as_json: bool
) -> tuple[Opened[PaymentRequest], PaymentProof]:
    with target.client() as client:
        try:
            opened = client.payment_request(quote_id, network=network)
            confirm_total(opened, max_fee_msat, yes=yes)
            return opened, pay_now(opened, spec, max_fee_msat)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))


def read_proof(value: str) -> PaymentProof:
    """`--proof`: the JSON line `fedai pay` printed, a file holding it, or '-' for stdin (exit 2 if unusable)."""
    from fedai.protocol.messages import decode_payload

    text = sys.stdin.read() if value == "-" else value
    if not text.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            fail("--proof: give the JSON line `fedai pay` printed, a file holding it, or -", code=2)
        text = path.read_text()
    try:
        return decode_payload(text.strip().encode(), PaymentProof)
    except FedaiError as err:
        fail(f"--proof: {err.message}", code=2)


@click.command("payment")
@click.argument("payment_id")
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print the router's document.")
def payment_cmd(
    payment_id: str,
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    as_json: bool,
) -> None:
    """Show one of your payment requests (PAYMENT_ID, from `fedai pay`) and each payee's state, as the router
    records it: issued, paid, consumed, released, refunded or expired, and its refund. Signed with your --key
    (NIP-98)."""
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    if target.keys is None:
        fail("a payment is shown only to the client that paid it: pass its --key (or set FEDAI_KEY)", code=2)
    with target.client() as client:
        try:
            status = client.payment_status(payment_id)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
    if as_json:
        print_json(status)
        return
    console.print(f"payment request {short_id(str(status.get('id', '')))}: {status.get('state')}", highlight=False)
    for p in status.get("payees", []):
        role = ROLE_NAMES.get(p["role"], p["role"])
        who = short_npub(p["payee"])
        console.print(f"  {role:<11} {who}  {p['amount_msat']:>9} msat  {p['state']}", highlight=False)
        refund = refund_line(p)
        if refund is not None:
            console.print(refund, highlight=False)
