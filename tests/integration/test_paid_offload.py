"""A client pays for an offloaded request through the client flow (docs/payments.md#federation-settlement): quote,
pay, infer, against requester A (no node, a paying router with a fee) and provider B (one node,
ROUTER_REQUIRE_PAYMENT), each router and the client with its own wallet, on a real relay.

TEST-ONLY WALLETS: the real LND backend against tests/support/fake_lnd.py (one in-memory ledger signing real
regtest BOLT11 invoices), as in test_federation_settlement.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from fedai.cli.chain_view import chain_document
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient, FedaiClientError
from fedai_router.housekeeping import UNPAID_AWARDS
from fedai_router.store.federation import spent
from tests.support.database import extra_database
from tests.support.fake_lnd import Lnd, running_lnd
from tests.support.federation import MODEL, Duo, duo
from tests.support.lightning import Ledger
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration

NETWORK = "regtest"
PROMPT = "hello federation"
FEE_MSAT = 500


@pytest.fixture(scope="module")
async def b_database(database_url: str) -> AsyncIterator[str]:
    async with extra_database(database_url, "offpay_b") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("offpay-tls"))


@dataclass
class Network:
    pair: Duo
    ledger: Ledger
    wallet: Lnd  # the client's own

    def client(self) -> AsyncClient:
        return AsyncClient(self.pair.a.url, Keys.generate(), router_pubkey=self.pair.a.pubkey)

    def balance(self, name: str) -> int:
        return self.ledger.nodes[name].balance_msat


@pytest.fixture
async def net(
    database_url: str, db_pool: asyncpg.Pool, b_database: str, tls: SelfSigned, tmp_path: Path
) -> AsyncIterator[Network]:
    ledger = Ledger()
    for name in ("client", "requester", "provider"):
        ledger.add_node(name, balance_msat=1_000_000 if name == "client" else 0)
    async with (
        running_lnd(ledger, "client", tls, tmp_path) as client,
        running_lnd(ledger, "requester", tls, tmp_path) as a_wallet,
        running_lnd(ledger, "provider", tls, tmp_path) as b_wallet,
    ):
        a_options = {
            "require_payment": True,
            "wallet": a_wallet.spec,
            "ln_network": NETWORK,
            "auction_ttl_ms": 2500,
            "fee_base_msat": FEE_MSAT,
            "fee_ppm": 0,
        }
        b_options = {"require_payment": True, "wallet": b_wallet.spec, "ln_network": NETWORK}
        async with duo(database_url, db_pool, b_database, a_options=a_options, b_options=b_options) as pair:
            yield Network(pair, ledger, client)


async def code_of(call: Awaitable[object]) -> str:
    """The error code a call that must fail answers."""
    with pytest.raises(FedaiClientError) as caught:
        await call
    code = getattr(caught.value, "code", None)
    return "" if code is None else str(code.value)


async def test_a_client_quotes_pays_and_gets_a_verified_answer_from_a_provider(net: Network) -> None:
    a, b, node = net.pair.a, net.pair.b, net.pair.node
    async with net.client() as c:
        quote = await c.quote(MODEL, max_tokens=8, prompt=PROMPT)
        q = quote.quote
        assert (q.node, q.provider) == (None, b.pubkey)  # priced by B's winning bid, A's fee on top
        bid = q.price.output_msat
        assert bid > 0 and q.price.router_fee_msat == FEE_MSAT and q.price.total_msat == bid + FEE_MSAT

        opened = await c.payment_request(quote, network=NETWORK)  # the SDK's check, with the provider's split
        roles = {(p.role, p.payee, p.amount_msat) for p in opened.payload.payees}
        assert roles == {("provider", b.pubkey, bid), ("router_fee", a.pubkey, FEE_MSAT)}
        proof = await c.pay(quote, net.wallet.wallet, payment_request=opened.event, network=NETWORK)
        # each payee was paid into its own wallet: A received only its fee, never the provider's money
        assert (net.balance("provider"), net.balance("requester")) == (bid, FEE_MSAT)

        chain = await c.infer(MODEL, PROMPT, max_tokens=8, quote_id=q.quote_id, payment=proof)
        provider_hash = next(p.payment_hash for p in opened.payload.payees if p.role == "provider")
        assert chain.provider == b.pubkey and chain.receipt is not None
        assert chain.provider_payment_hash == chain.receipt.payment_hash == provider_hash
        assert node.calls == 1
        # `fedai infer --json` shows the provider paid, from the payment request the answer carries
        shown = chain_document(chain)["payment"]
        assert shown["payment_request"] == opened.event.id and shown["total_msat"] == q.price.total_msat
        provider_row = {"role": "provider", "payee": b.pubkey, "amount_msat": bid, "payment_hash": provider_hash}
        assert {**provider_row, "paid": True} in shown["payees"]

        # the same proof again: refused, nothing runs twice
        replay = c.infer(MODEL, PROMPT, max_tokens=8, quote_id=q.quote_id, payment=proof)
        assert await code_of(replay) == "payment_used"
        assert node.calls == 1
    pool = a.service.pool
    bound = await pool.fetchval("SELECT payment_request FROM offload_quotes WHERE quote_id = $1", q.quote_id)
    assert bound == opened.event.id  # the award was bound to the payment request issued for it


async def test_an_award_whose_quote_expired_unpaid_stops_counting_against_the_spend_cap(net: Network) -> None:
    a, b = net.pair.a, net.pair.b
    pool = a.service.pool
    async with net.client() as c:
        paid_quote = await c.quote(MODEL, max_tokens=8, prompt=PROMPT)
        await c.pay(paid_quote, net.wallet.wallet, network=NETWORK)  # a payment request issued: kept
        unpaid = await c.quote(MODEL, max_tokens=8, prompt=PROMPT)
    window = a.service.settings.fed_spend_window_s
    reserved = await spent(pool, b.pubkey, window)
    assert reserved == paid_quote.quote.price.output_msat + unpaid.quote.price.output_msat
    ids = [paid_quote.quote.quote_id, unpaid.quote.quote_id]
    await pool.execute("UPDATE quotes SET expires_at = now() - interval '1 second' WHERE id = ANY($1)", ids)
    counts = await a.service.housekeeper.run()
    assert counts[UNPAID_AWARDS] == 1
    status = "SELECT j.status FROM federation_jobs j JOIN offload_quotes o USING (job_id) WHERE o.quote_id = $1"
    assert await pool.fetchval(status, unpaid.quote.quote_id) == "cancelled"
    # a payment request was issued for the other: left to run out
    assert await pool.fetchval(status, paid_quote.quote.quote_id) == "awarded"
    assert await spent(pool, b.pubkey, window) == paid_quote.quote.price.output_msat


async def test_a_failed_provider_releases_the_claim_and_the_same_proof_is_served_once(net: Network) -> None:
    node = net.pair.node
    async with net.client() as c:
        quote = await c.quote(MODEL, max_tokens=8, prompt=PROMPT)
        proof = await c.pay(quote, net.wallet.wallet, network=NETWORK)
        quote_id = quote.quote.quote_id

        # another job than the one quoted (the award is for the exact job): refused, the claim released
        other = c.infer(MODEL, PROMPT + "!", max_tokens=8, quote_id=quote_id, payment=proof)
        assert await code_of(other) == "quote_invalid"
        assert node.calls == 0

        node.behaviour = "error_500"  # the provider's node fails after everyone was paid
        failed = c.infer(MODEL, PROMPT, max_tokens=8, quote_id=quote_id, payment=proof)
        assert await code_of(failed) != ""
        node.behaviour, failed_calls = "ok", node.calls
        assert failed_calls >= 1

        deadline = time.monotonic() + 20
        chain = None
        while chain is None:  # B's node may be cooling down after its failure (no_capacity): the same proof retries
            try:
                chain = await c.infer(MODEL, PROMPT, max_tokens=8, quote_id=quote_id, payment=proof)
            except FedaiClientError as err:
                code = getattr(err, "code", None)
                if code is None or code.value != "no_capacity" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert chain.receipt is not None and chain.receipt.payment_hash == chain.provider_payment_hash
        assert node.calls == failed_calls + 1
        again = c.infer(MODEL, PROMPT, max_tokens=8, quote_id=quote_id, payment=proof)
        assert await code_of(again) == "payment_used"
        assert node.calls == failed_calls + 1
