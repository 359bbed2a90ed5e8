"""Render a `VerifiedChain` for people: every hop with its event id, signer and the checks that passed.

A `VerifiedChain` only exists if `fedai.sdk.verify_chain` accepted every signature and binding, so each ✓
here states a check that was actually made, not a hope. An offloaded answer (a peer router served it) shows
the router's job.submit and the provider router's signed result and receipt between the router and the node.
Every line fits 80 columns: ids are shortened here and whole in `--json` (`chain_document`).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fedai.cli.output import CHECK, short_id, short_npub
from fedai.cli.payment_view import payment_document, payment_lines
from fedai.protocol.event import Event
from fedai.protocol.messages import InferResult, Offload, decode_payload
from fedai.sdk import VerifiedChain

Step = tuple[str, Event, str]  # what it is, the signed event, the checks made on it


def _checks(*names: str) -> str:
    return "  ".join(f"{CHECK} {name}" for name in names)


def offload_of(chain: VerifiedChain) -> Offload | None:
    """The offload record in the router's answer (already verified by the SDK), when a peer served it."""
    if chain.provider is None:
        return None
    return decode_payload(chain.answer.content, InferResult).offload


def _steps(chain: VerifiedChain, off: Offload | None) -> list[Step]:
    """The signed events from the client's request to the node's metering, with the checks each passed."""
    head: list[Step] = [
        ("client request", chain.request, "[dim]signed by this client[/dim]"),
        ("router answer", chain.answer, _checks("signature", "e→#1", "p→client")),
    ]
    via = []
    if off is not None:
        via = [
            ("job submit", off.submit, _checks("signature", "same request (hash)", "p→provider")),
            ("job result", off.result, _checks("signature", "e→#3", "p→router")),
            ("job receipt", off.receipt, _checks("signature", "e→#3", "input hash", "output hash")),
        ]
    n = len(head) + len(via) + 1  # the forwarded request's number
    origin = "#3" if off is not None else "#1"
    tail = [
        ("forwarded request", chain.forwarded, _checks("signature", f"origin→{origin}", "same request", "p→node")),
        ("node response", chain.response, _checks("signature", f"e→#{n}", f"p→{'provider' if off else 'router'}")),
        (
            "node metering",
            chain.metering,
            _checks("signature", f"e→#{n}", f"response→#{n + 1}", "prompt hash", "output hash", "tokens"),
        ),
    ]
    return [*head, *via, *tail]


def chain_lines(chain: VerifiedChain) -> list[str]:
    """Two lines per signed event, client request to node metering: what it is, then what was checked."""
    off = offload_of(chain)
    roles = {chain.request.pubkey: "client", chain.router: "router", chain.node: "node"}
    path = "client → router → node"
    if off is not None:
        roles[off.provider] = "provider"
        path = "client → router → provider router → node"
    lines = [
        f"[bold]verified chain[/bold]: {path}",
        "[dim]every hop a signed Nostr event[/dim]",
        f"[dim]{'#':>3}  {'step':<18} {'kind':<6} {'event':<13} signer[/dim]",
    ]
    for number, (step, event, checks) in enumerate(_steps(chain, off), start=1):
        signer = f"{roles.get(event.pubkey, '?'):<8} {short_npub(event.pubkey)}"
        lines.append(f"{number:>3}  {step:<18} {event.kind:<6} {short_id(event.id)} {signer}")
        lines.append(f"     {checks}")
    return lines


def chain_document(chain: VerifiedChain) -> dict[str, Any]:
    """What `fedai infer --json` prints: the SDK's summary, whole ids, and who served it (`offloaded`,
    `provider`, the provider's signed `receipt` as event id, signer and terms), and the invoices paid
    (`payment`, null when unpaid)."""
    document = {**chain.summary(), "verified": True, "offloaded": chain.provider is not None, "provider": None}
    document["receipt"] = None
    document["payment"] = payment_document(chain)
    off = offload_of(chain)
    if off is not None and chain.receipt is not None:
        document["provider"] = off.provider
        document["receipt"] = {
            "event": off.receipt.id,
            "signer": off.receipt.pubkey,
            "job_id": chain.receipt.job_id,
            "price_msat": chain.receipt.price_msat,
        }
        document["events"] = {**document["events"], "job_submit": off.submit.id, "job_result": off.result.id}
    return document


def metering_table(chain: VerifiedChain) -> Table:
    """What the node metered and signed for this request (and, offloaded, what the provider charged)."""
    record = chain.record
    table = Table(title="metering (signed by the node)", title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    table.add_row("node", short_npub(chain.node))
    if chain.provider is not None:
        table.add_row("provider", f"{short_npub(chain.provider)} (peer router)")
    table.add_row("model", record.model)
    table.add_row("tokens", f"{record.input_tokens} in / {record.output_tokens} out")
    table.add_row("node's price", f"{record.price_msat} msat")
    if chain.receipt is not None:
        table.add_row("provider's price", f"{chain.receipt.price_msat} msat (signed receipt)")
    table.add_row("wall time", f"{record.wall_ms:.1f} ms")
    table.add_row("bytes", f"{record.bytes_in} in / {record.bytes_out} out")
    table.add_row("finish", chain.result.finish_reason)
    return table


def print_chain(console: Console, chain: VerifiedChain, *, show_output: bool = True) -> None:
    """The output (unless it was already streamed), the verified chain and the metering, in that order."""
    if show_output:
        console.print(Panel(Text(chain.output), title="output", title_align="left", expand=False))  # not markup
    for line in chain_lines(chain):
        console.print(line, highlight=False)
    console.print(metering_table(chain))
    for line in payment_lines(chain):
        console.print(line, highlight=False)
    console.print(f"{CHECK} [bold green]chain verified[/bold green]: every signature and binding above was checked")
