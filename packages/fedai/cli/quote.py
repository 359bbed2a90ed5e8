"""`fedai quote`: a signed price for the request `fedai infer` would send with the same words.

PROMPT is priced as the one user chat message `infer PROMPT` sends (the same bytes, so the same token
estimate), `--prompt` as raw text, `--messages` as a conversation; the quote id is printed whole, unwrapped,
to be passed to `fedai infer --quote`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import msgspec

from fedai.cli.client import default_model, resolve_target, target_options, warn_if_anonymous
from fedai.cli.output import console, fail_fedai, paste_line, print_json, short_id, short_npub
from fedai.cli.prompt_input import exactly_one, read_prompt
from fedai.protocol.errors import FedaiError
from fedai.sdk import FedaiClientError, Quote


def _print_quote(quote: Quote) -> None:
    """The quote for people, one field a line (fits 80 columns), the id whole and unwrapped."""
    q = quote.quote
    console.print("[bold]quote[/bold] (signed by the router)")
    paste_line(f"  quote id    {q.quote_id}")
    rows = [
        ("model", q.model),
        # a peer router's job is priced by its bid, one figure (docs/payments.md#federation-settlement)
        ("provider", short_npub(q.provider)) if q.provider else ("node", short_npub(q.payee)),
        ("tokens", f"{q.input_tokens} in / up to {q.max_output_tokens} out"),
        *(
            [("provider bid", f"{q.price.output_msat} msat")]
            if q.provider
            else [("input", f"{q.price.input_msat} msat"), ("output max", f"{q.price.output_msat} msat")]
        ),
        ("router fee", f"{q.price.router_fee_msat} msat"),
        ("total max", f"[bold]{q.price.total_msat} msat[/bold]"),
        ("expires", f"in {max(0, q.expires_at - int(time.time()))} s"),
        ("event", short_id(quote.event.id)),
    ]
    for name, value in rows:
        console.print(f"  {name:<11} {value}", highlight=False)
    console.print("[dim]pay with it (same --key and --model, the same prompt):[/dim]")
    paste_line(f'  fedai infer --quote {q.quote_id} --max-tokens {q.max_output_tokens} "…"')


@click.command("quote")
@click.argument("prompt_arg", metavar="[PROMPT]", required=False)
@target_options
@click.option("--model", "-m", help="Model id (default: the first model the router lists).")
@click.option("--max-tokens", type=click.IntRange(1, 1_000_000), default=256, show_default=True)
@click.option("--prompt", "prompt_opt", help="Price this raw completion prompt ('-' reads stdin).")
@click.option("--messages", help="Price these chat messages (JSON, a file of it, or -).")
@click.option("--input-tokens", type=click.IntRange(0), help="Price this many input tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the signed quote as one JSON document.")
def quote_cmd(
    prompt_arg: str | None,
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    model: str | None,
    max_tokens: int,
    prompt_opt: str | None,
    messages: str | None,
    input_tokens: int | None,
    as_json: bool,
) -> None:
    """Ask the router for a signed price quote for PROMPT (priced as `fedai infer PROMPT` sends it: one user
    chat message), a raw --prompt, --messages or a number of --input-tokens."""
    exactly_one("PROMPT, --prompt, --messages or --input-tokens", prompt_arg, prompt_opt, messages, input_tokens)
    fields: dict[str, Any] = (
        {"input_tokens": input_tokens}
        if input_tokens is not None
        else read_prompt(prompt_arg, prompt_opt, messages).fields()
    )
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    warn_if_anonymous(target)
    with target.client() as client:
        try:
            chosen = model or default_model(client)
            quote = client.quote(chosen, max_tokens=max_tokens, **fields)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
    if as_json:
        document: dict[str, Any] = msgspec.to_builtins(quote.quote)
        print_json({**document, "event": quote.event.id, "router": quote.event.pubkey})
        return
    _print_quote(quote)
