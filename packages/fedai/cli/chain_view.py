"""Render a `VerifiedChain` for people: every hop with its event id, signer and the checks that passed.

A `VerifiedChain` only exists if `fedai.sdk.verify_chain` accepted every signature and binding, so each ✓
here states a check that was actually made, not a hope.
"""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fedai.cli.output import CHECK, short_id, short_npub
from fedai.sdk import VerifiedChain


def _checks(*names: str) -> str:
    return "  ".join(f"{CHECK} {name}" for name in names)


def chain_lines(chain: VerifiedChain) -> list[str]:
    """Two lines per signed event, client request to node metering: what it is, then what was checked."""
    roles = {
        chain.request.pubkey: "client",
        chain.router: "router",
        chain.node: "node",
    }
    rows = [
        ("client request", chain.request, "[dim]signed by this client[/dim]"),
        ("router answer", chain.answer, _checks("signature", "e→#1", "p→client")),
        ("forwarded request", chain.forwarded, _checks("signature", "origin→#1", "same request", "p→node")),
        ("node response", chain.response, _checks("signature", "e→#3", "p→router")),
        (
            "node metering",
            chain.metering,
            _checks("signature", "e→#3", "response→#4", "prompt hash", "output hash", "tokens"),
        ),
    ]
    lines = [
        "[bold]verified chain[/bold]: client → router → node, every hop a signed Nostr event",
        f"[dim]{'#':>3}  {'step':<18} {'kind':<6} {'event':<13} signer[/dim]",
    ]
    for number, (step, event, checks) in enumerate(rows, start=1):
        signer = f"{roles.get(event.pubkey, '?')} {short_npub(event.pubkey)}"
        lines.append(f"{number:>3}  {step:<18} {event.kind:<6} {short_id(event.id)} {signer}")
        lines.append(f"     {checks}")
    return lines


def metering_table(chain: VerifiedChain) -> Table:
    """What the node metered and signed for this request."""
    record = chain.record
    table = Table(title="metering (signed by the node)", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("node", f"{short_npub(chain.node)} ({chain.node[:16]}…)")
    table.add_row("model", record.model)
    table.add_row("tokens", f"{record.input_tokens} in / {record.output_tokens} out")
    table.add_row("price", f"{record.price_msat} msat")
    table.add_row("wall time", f"{record.wall_ms:.1f} ms")
    table.add_row("bytes", f"{record.bytes_in} in / {record.bytes_out} out")
    table.add_row("finish", chain.result.finish_reason)
    return table


def print_chain(console: Console, chain: VerifiedChain) -> None:
    """The output, the verified chain and the metering, in that order."""
    console.print(Panel(Text(chain.output), title="output", title_align="left", expand=False))  # not markup
    for line in chain_lines(chain):
        console.print(line, highlight=False)
    console.print(metering_table(chain))
    console.print(f"{CHECK} [bold green]chain verified[/bold green]: every signature and binding above was checked")
