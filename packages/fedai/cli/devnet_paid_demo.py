"""The paid demo of `fedai devnet --pay --demo`: quote, pay each invoice from the client's wallet, infer with the
proof, verify the chain, then show who was paid what from the wallets' own balances before and after.

The payouts are not taken from the quote: every party's balance is read from its LNbits wallet, and each change
is checked against what the signed quote said it should be (the serving node its share, the router its fee,
the client down by the total, every other node unchanged).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from fedai.cli.chain_view import print_chain
from fedai.cli.devnet_demo import DEMO_MAX_TOKENS, DEMO_TIMEOUT_S
from fedai.cli.devnet_file import DevnetInfo
from fedai.cli.devnet_pay import CLIENT, ROUTER
from fedai.cli.output import CHECK, CROSS, as_fedai_error, err_console, short_id, short_npub
from fedai.payments.wallet import Wallet
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.messages import PaymentProof
from fedai.sdk import AsyncClient, FedaiClientError, VerifiedChain
from fedai.sdk.client import Quote

# The router prices a prompt it has not tokenized at about 4 characters a token and cannot see the model's chat
# template, which a chat model's node counts (SmolLM2's adds some 25 tokens): metered above the quote, the answer
# would be refused. For a chat model the demo declares its input as a ceiling instead: a token per character of
# the prompt, plus this much for the template. A ceiling paid in full, until refunds return the unused part.
CHAT_TEMPLATE_TOKENS = 64


@dataclass(frozen=True)
class PaidRun:
    quote: Quote
    proof: PaymentProof
    chain: VerifiedChain
    before: dict[str, int]  # party → balance (msat)
    after: dict[str, int]


async def _balances(wallets: dict[str, Wallet]) -> dict[str, int]:
    return {party: await wallet.balance_msat() for party, wallet in wallets.items()}


async def _paid_inference(info: DevnetInfo, keys: Keys, prompt: str, *, chat: bool) -> PaidRun:
    from fedai.payments.config import open_wallet  # the `pay` extra (the devnet has it)

    assert info.lnbits is not None
    model = info.nodes[0].model
    messages = [{"role": "user", "content": prompt}]
    async with AsyncExitStack() as stack:
        wallets: dict[str, Wallet] = {}
        for party, path in info.lnbits.wallet_files.items():
            wallets[party] = wallet = open_wallet(path, f"{party}'s wallet")
            stack.push_async_callback(wallet.aclose)
        client = await stack.enter_async_context(
            AsyncClient(info.router.url, keys, router_pubkey=info.router.pubkey, timeout=DEMO_TIMEOUT_S)
        )
        before = await _balances(wallets)
        if chat:  # a real model: a chat message, greedily decoded (as the unpaid demo)
            ceiling = len(prompt) + CHAT_TEMPLATE_TOKENS  # see CHAT_TEMPLATE_TOKENS
            quote = await client.quote(model, max_tokens=DEMO_MAX_TOKENS, messages=messages, input_tokens=ceiling)
            proof = await client.pay(quote, wallets[CLIENT], network=info.lnbits.network)
            chain = await client.infer(
                model,
                messages=messages,
                max_tokens=DEMO_MAX_TOKENS,
                temperature=0.0,
                quote_id=quote.quote.quote_id,
                payment=proof,
            )
        else:
            quote = await client.quote(model, max_tokens=DEMO_MAX_TOKENS, prompt=prompt)
            proof = await client.pay(quote, wallets[CLIENT], network=info.lnbits.network)
            chain = await client.infer(
                model, prompt, max_tokens=DEMO_MAX_TOKENS, quote_id=quote.quote.quote_id, payment=proof
            )
        return PaidRun(quote, proof, chain, before, await _balances(wallets))


def expected_changes(info: DevnetInfo, quote: Quote) -> dict[str, int]:
    """What each party's balance should change by (msat): the quote's node its share, the router its fee."""
    price = quote.quote.price
    names = {node.pubkey: f"node-{index + 1}" for index, node in enumerate(info.nodes)}
    expected = {party: 0 for party in names.values()}
    expected[names[quote.quote.payee]] = price.input_msat + price.output_msat
    return expected | {CLIENT: -price.total_msat, ROUTER: price.router_fee_msat}


def _role(party: str, expected: int) -> str:
    if party == CLIENT:
        return "the quote's total"
    if party == ROUTER:
        return "its fee"
    return "its share" if expected else "not chosen"


def print_payouts(out: Console, info: DevnetInfo, run: PaidRun) -> bool:
    """One line per party: its balance change, what the quote says it should be, and whether it is."""
    expected = expected_changes(info, run.quote)
    keys = {CLIENT: run.chain.request.pubkey, ROUTER: info.router.pubkey}
    keys |= {f"node-{i + 1}": node.pubkey for i, node in enumerate(info.nodes)}
    out.print("[bold]payouts[/bold] [dim](balance after − before, in each party's own LNbits wallet)[/dim]")
    matched = True
    for party in (CLIENT, *sorted(p for p in expected if p.startswith("node-")), ROUTER):
        change = run.after[party] - run.before[party]
        want = expected[party]
        ok = change == want
        matched &= ok
        mark = CHECK if ok else f"{CROSS} [red]expected {want:+d} msat[/red]"
        out.print(f"  {party:<8} {short_npub(keys[party])} {change:>+12d} msat  {_role(party, want):<17} {mark}")
    return matched


def run_paid_demo(out: Console, info: DevnetInfo, client_keys: Keys, prompt: str, *, chat: bool) -> bool:
    """One paid inference as the devnet's client; True if the chain verified and every payout is as quoted."""
    out.print()
    out.print(f"[bold]paid demo[/bold]: quote, pay, infer {info.nodes[0].model!r} through {info.router.url}")
    out.print(f"  prompt: {escape(prompt)}", highlight=False)
    try:
        run = asyncio.run(_paid_inference(info, client_keys, prompt, chat=chat))
    except (FedaiClientError, FedaiError) as err:
        step = getattr(err, "step", None) or getattr(err, "link", None)
        where = f" at {step}" if step else ""
        why = as_fedai_error(err)
        err_console.print(f"{CROSS} [red]paid demo failed{where}[/red]: {why.code.value}: {why.message}")
        return False
    price = run.quote.quote.price
    out.print(
        f"  quote {short_id(run.quote.quote.quote_id)}: node {price.input_msat + price.output_msat} msat"
        f" + router fee {price.router_fee_msat} msat = {price.total_msat} msat"
    )
    out.print(
        f"  paid {len(run.proof.preimages)} invoices from the client's wallet"
        f" (payment request {short_id(run.proof.payment_request)})"
    )
    print_chain(out, run.chain)
    matched = print_payouts(out, info, run)
    if matched:
        out.print(f"{CHECK} every proof verified: the client checked the payment request before paying,")
        out.print("  the router the client's preimages, the node its invoice settled in its wallet,")
        out.print("  the client the node's share of the proof forwarded in the chain")
    else:
        err_console.print(f"{CROSS} [red]the wallets' balances did not move as the quote said[/red]")
    return matched
