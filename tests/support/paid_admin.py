"""A paying network on loopback (tests/support/paid_network.py) with an operator key and two payment requests, for
the admin API's and the dashboard's payments views (runbooks/admin.md): one paid, served and refunded in part to
the client's LNURL address, then one paid for and never used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from fedai.sdk.chain import VerifiedChain
from fedai_router.settlement_settings import SettlementSettings
from tests.support.lnurl import LnurlService
from tests.support.paid_network import MODEL, NETWORK, PaidNetwork, paid_network
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned
from tests.support.wait import eventually_async

PROMPT = "What is 2+2?"
MAX_TOKENS = 64  # well above what the mock runner writes: each payee refunds most of its share
FEE_PPM = 200_000


@dataclass
class Paid:
    net: PaidNetwork
    operator: Keys
    chain: VerifiedChain
    consumed: str  # the payment request served
    issued: str  # a later one, paid for but never used
    secrets: list[str]  # every invoice, preimage and the refund destination: no answer may show one


@asynccontextmanager
async def paid_and_refunded(database_url: str, pool: asyncpg.Pool, tls: SelfSigned, tmp: Path) -> AsyncIterator[Paid]:
    operator = Keys.generate()
    async with paid_network(
        database_url,
        pool,
        tls,
        tmp,
        fee_base_msat=0,
        fee_ppm=FEE_PPM,
        settlement=SettlementSettings(refund_dust_msat=1),
        admin_keys=frozenset({operator.pubkey}),
    ) as net:
        net.ledger.fee_base_msat = 0  # payees pay their refunds' routing fees from exactly what they were paid
        lnurl = LnurlService(net.client_wallet.wallet)
        async with serve_app(lnurl.app()) as url, AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as c:
            lnurl.base_url = url
            address = f"client@{url.removeprefix('http://')}"
            quote = await c.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
            proof = await c.pay(quote, net.client_wallet.wallet, network=NETWORK, refund_to=address)
            chain = await c.infer(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote.quote.quote_id, payment=proof)

            async def refunds_paid() -> bool:
                states = {r["role"]: r["state"] for r in await pool.fetch("SELECT role, state FROM refunds")}
                return states == {"node": "paid", "router_fee": "paid"}

            await eventually_async(refunds_paid, what="both refunds paid")
            later = await c.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
            unused = await c.pay(later, net.client_wallet.wallet, network=NETWORK)
            invoices = [r["bolt11"] for r in await pool.fetch("SELECT bolt11 FROM payment_payees")]
            refund_invoices = [r["invoice"] for r in await pool.fetch("SELECT invoice FROM refunds")]
            preimages = [*proof.preimages.values(), *unused.preimages.values()]
            hidden = [*invoices, *refund_invoices, *preimages, address, url.removeprefix("http://")]
            yield Paid(net, operator, chain, proof.payment_request, unused.payment_request, hidden)


def assert_hidden(text: str, secrets: list[str]) -> None:
    """None of `secrets` appears in `text` (the count only: the values are never printed)."""
    shown = [s for s in secrets if s and s in text]
    assert not shown, f"{len(shown)} secret value(s) in an answer"


__all__ = ["MAX_TOKENS", "PROMPT", "Paid", "assert_hidden", "paid_and_refunded"]
