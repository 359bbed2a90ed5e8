"""`fedai infer --pay`: quote → payment request → confirm → pay → infer, in one go (docs/payments.md#paying-from-
the-command-line). Once paid, a failure is reported with the proof, which stays valid for a retry until the
payment request expires (a payee that failed to serve releases its claim: nothing paid is lost)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from fedai.cli.client import Target, default_model
from fedai.cli.extras import require_extra
from fedai.cli.output import fail, fail_fedai
from fedai.cli.pay import check_wallet, confirm_total, pay_now, proof_text
from fedai.cli.prompt_input import PromptInput
from fedai.protocol.errors import FedaiError
from fedai.sdk import FedaiClientError, VerifiedChain


@dataclass(frozen=True)
class PayOptions:
    wallet: str | None
    network: str
    max_fee_msat: int
    yes: bool


def check_pay(pay: PayOptions, *, stream: bool, quote_id: str | None, proof: bool) -> str:
    """The --pay options make sense together; returns the checked wallet spec (exit 2 otherwise)."""
    require_extra("pay", "fedai infer --pay")
    if stream:
        fail("--pay serves non-streamed answers for now: drop --stream", code=2)
    if quote_id is not None or proof:
        fail("--pay asks for its own quote: drop --quote and --proof (or drop --pay to use them)", code=2)
    return check_wallet(pay.wallet, pay.network)


def run_paid(
    target: Target,
    model: str | None,
    sent: PromptInput,
    max_tokens: int,
    pay: PayOptions,
    *,
    as_json: bool,
    input_tokens: int | None = None,
) -> VerifiedChain:
    """Quote the request (for `input_tokens` when given, else for the prompt as the router estimates it), pay its
    payment request from the wallet once confirmed, and send it with the proof. `pay.wallet` was checked by
    `check_pay`."""
    spec = str(pay.wallet)
    with target.client() as client:
        try:
            chosen = model or default_model(client)
            priced = sent.fields() if input_tokens is None else {"input_tokens": input_tokens}
            quote = client.quote(chosen, max_tokens=max_tokens, **priced)
            opened = client.payment_request(quote, network=pay.network)
            confirm_total(opened, pay.max_fee_msat, yes=pay.yes)
            proof = pay_now(opened, spec, pay.max_fee_msat)
        except (FedaiError, FedaiClientError) as err:
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
        quote_id = quote.quote.quote_id
        try:
            return client.infer(
                chosen, sent.prompt, messages=sent.messages, max_tokens=max_tokens, quote_id=quote_id, payment=proof
            )
        except (FedaiError, FedaiClientError) as err:
            click.echo(f"paid, not served; retry with the same proof until it expires:\n{proof_text(proof)}", err=True)
            click.echo(f"  fedai infer --quote {quote_id} --proof PROOF --max-tokens {max_tokens} …", err=True)
            fail_fedai(err, as_json=as_json, hint=target.hint(err))
