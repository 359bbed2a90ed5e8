"""`fedai infer`: sign an inference request, send it through the router, verify the chain that comes back."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from fedai.cli.chain_view import chain_document, print_chain
from fedai.cli.client import Target, default_model, resolve_target, target_options, warn_if_anonymous
from fedai.cli.infer_paid import PayOptions, check_pay, run_paid
from fedai.cli.output import console, fail, fail_fedai, print_json
from fedai.cli.pay import read_proof, wallet_options
from fedai.cli.prompt_input import PromptInput, exactly_one, read_prompt
from fedai.protocol.errors import FedaiError
from fedai.protocol.messages import INT4_MAX
from fedai.sdk import Client, FedaiClientError, VerifiedChain

# What is true when a stream is cut: closing the connection makes the router send the node a signed
# infer.cancel and store the node's metering of what it produced (fedai_router.stream_relay).
CANCELLED = "cancelled: the router stops the node and meters what it produced so far"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def _stream(client: Client, model: str, sent: PromptInput, max_tokens: int, options: dict[str, Any]) -> VerifiedChain:
    """Print the answer as it comes; on Ctrl-C close the stream, say what happens to the request, exit 130."""
    try:
        with client.stream(model, sent.prompt, messages=sent.messages, max_tokens=max_tokens, **options) as live:
            for delta in live:
                console.print(Text(delta), end="")
            console.print()
            return live.chain
    except KeyboardInterrupt:
        console.print()
        click.echo(CANCELLED, err=True)
        sys.exit(EXIT_INTERRUPTED)


def _run(
    target: Target,
    model: str | None,
    sent: PromptInput,
    max_tokens: int,
    stream: bool,
    input_tokens: int | None,
    **options: Any,
) -> VerifiedChain:
    with target.client() as client:
        chosen = model or default_model(client)
        if input_tokens is not None:  # quoted for that many input tokens, and sent with that quote
            options["quote_id"] = client.quote(chosen, max_tokens=max_tokens, input_tokens=input_tokens).quote.quote_id
        if stream:
            return _stream(client, chosen, sent, max_tokens, options)
        return client.infer(chosen, sent.prompt, messages=sent.messages, max_tokens=max_tokens, **options)


@click.command("infer")
@click.argument("prompt_arg", metavar="[PROMPT]", required=False)
@target_options
@click.option("--model", "-m", help="Model id (default: the first model the router lists).")
@click.option("--max-tokens", type=click.IntRange(1, 1_000_000), default=256, show_default=True)
@click.option("--prompt", "prompt_opt", help="A raw completion prompt, no chat template ('-' reads stdin).")
@click.option("--messages", help='Chat messages as JSON ([{"role": "user", "content": "…"}]), a file of it, or -.')
@click.option("--quote", "quote_id", help="Pay with this quote (`fedai quote`: same --key, model and max tokens).")
@click.option("--proof", help="The proof `fedai pay` printed for --quote (the JSON line, a file of it, or -).")
@click.option("--pay", "pay_flag", is_flag=True, help="Quote, pay from --wallet (after a confirmation), then infer.")
@click.option(
    "--input-tokens",
    type=click.IntRange(1, INT4_MAX),
    help="Quote (with --pay: pay for) this many input tokens, for a model whose tokenizer counts more than the "
    "router's estimate (4 bytes a token).",
)
@wallet_options
@click.option("--stream", is_flag=True, help="Print the answer as it is generated (every chunk verified).")
@click.option("--temperature", type=click.FloatRange(0, 2))
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Print the chain summary as one JSON document.")
def infer_cmd(
    prompt_arg: str | None,
    router: str | None,
    router_pubkey: str | None,
    key: str | None,
    devnet_dir: Path | None,
    model: str | None,
    max_tokens: int,
    prompt_opt: str | None,
    messages: str | None,
    quote_id: str | None,
    proof: str | None,
    pay_flag: bool,
    input_tokens: int | None,
    wallet: str | None,
    network: str,
    max_fee_msat: int,
    yes: bool,
    stream: bool,
    temperature: float | None,
    top_p: float | None,
    as_json: bool,
) -> None:
    """Sign an inference request, send it through the router and verify the returned chain.

    PROMPT is sent as one user chat message (the model's chat template applies); --prompt sends a raw
    completion prompt; --messages a whole conversation. '-' reads any of them from stdin. On a paying router,
    --pay quotes, pays from --wallet and sends the proof in one go; or pay first with `fedai pay`. --input-tokens
    N quotes N input tokens instead of the router's estimate of the prompt, and sends the request with that quote.
    """
    exactly_one("PROMPT, --prompt or --messages", prompt_arg, prompt_opt, messages)
    if input_tokens is not None and (quote_id is not None or proof is not None):
        fail("--input-tokens asks for its own quote: drop --quote and --proof (or drop --input-tokens)", code=2)
    paying = PayOptions(wallet, network, max_fee_msat, yes)
    if pay_flag:
        paying = replace(paying, wallet=check_pay(paying, stream=stream, quote_id=quote_id, proof=proof is not None))
    sent = read_prompt(prompt_arg, prompt_opt, messages)
    if input_tokens is not None and input_tokens < (least := sent.estimated_tokens()):
        fail(f"--input-tokens {input_tokens} is below the router's estimate of this prompt ({least}): raise it", code=2)
    payment = read_proof(proof) if proof is not None else None
    options = {"temperature": temperature, "top_p": top_p, "quote_id": quote_id, "payment": payment}
    target = resolve_target(router, router_pubkey, key, devnet_dir)
    warn_if_anonymous(target)
    streamed = stream and not as_json
    try:
        if pay_flag:
            chain = run_paid(target, model, sent, max_tokens, paying, as_json=as_json, input_tokens=input_tokens)
        else:
            given = {k: v for k, v in options.items() if v is not None}
            chain = _run(target, model, sent, max_tokens, streamed, input_tokens, **given)
    except (FedaiError, FedaiClientError) as err:
        fail_fedai(err, as_json=as_json, hint=target.hint(err))
    if as_json:
        print_json(chain_document(chain))
        return
    print_chain(console, chain, show_output=not streamed)  # a streamed answer was printed as it came
