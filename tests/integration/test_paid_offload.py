"""A client pays for an offloaded request through the client flow (docs/payments.md#federation-settlement): quote,
pay, infer, against requester A (no node, a paying router with a fee) and provider B (one node,
ROUTER_REQUIRE_PAYMENT), each router and the client with its own wallet, on a real relay. The provider states in
its receipt what it used of its invoice and refunds the rest to the client's LNURL-pay destination (served on
loopback, invoicing from the client's wallet); the requester states its fee (docs/payments.md#refunds).

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
from fedai.protocol.messages import InferenceRequest, Settlement, decode_payload
from fedai.sdk import AsyncClient, FedaiClientError
from fedai.sdk.chain import VerifiedChain
from fedai_router.housekeeping import UNPAID_AWARDS
from fedai_router.settlement_settings import SettlementSettings
from fedai_router.store.federation import spent
from tests.support.database import extra_database
from tests.support.fake_lnd import Lnd, running_lnd
from tests.support.federation import MODEL, Duo, duo
from tests.support.lightning import Ledger
from tests.support.lnurl import LnurlService
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

NETWORK = "regtest"
PROMPT = "hello federation"
FEE_MSAT = 500
CLIENT_BALANCE_MSAT = 1_000_000
REFUND_TOKENS = 1024  # a ceiling far above what the scripted node writes: most of the provider's bid is unused


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
        ledger.add_node(name, balance_msat=CLIENT_BALANCE_MSAT if name == "client" else 0)
    # routing fees are the payer's: a refunding payee holds exactly what it was paid (runbooks/payments.md)
    ledger.fee_base_msat = 0
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
        b_options = {
            "require_payment": True,
            "wallet": b_wallet.spec,
            "ln_network": NETWORK,
            "settlement": SettlementSettings(refund_dust_msat=1),
        }
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


@pytest.fixture
async def lnurl(net: Network) -> AsyncIterator[LnurlService]:
    service = LnurlService(net.wallet.wallet)  # invoices from the client's own wallet
    async with serve_app(service.app()) as url:
        service.base_url = url
        yield service


async def paid_offload(c: AsyncClient, net: Network, refund_to: str | None) -> tuple[int, VerifiedChain]:
    quote = await c.quote(MODEL, max_tokens=REFUND_TOKENS, prompt=PROMPT)
    assert quote.quote.provider == net.pair.b.pubkey
    proof = await c.pay(quote, net.wallet.wallet, network=NETWORK, refund_to=refund_to)
    chain = await c.infer(MODEL, PROMPT, max_tokens=REFUND_TOKENS, quote_id=quote.quote.quote_id, payment=proof)
    return quote.quote.price.total_msat, chain


async def stated(pool: asyncpg.Pool, payment_hash: str) -> tuple[int, int, int, int] | None:
    """A statement as a router kept it (`payment_settlements`)."""
    row = await pool.fetchrow(
        "SELECT quoted_msat, used_msat, refund_msat, kept_msat FROM payment_settlements WHERE payment_hash = $1",
        payment_hash,
    )
    return None if row is None else (row[0], row[1], row[2], row[3])


def amounts(s: Settlement) -> tuple[int, int, int, int]:
    return (s.quoted_msat, s.used_msat, s.refund_msat, s.kept_msat)


async def test_the_provider_refunds_its_unused_share_to_the_clients_destination(
    net: Network, lnurl: LnurlService
) -> None:
    a, b = net.pair.a, net.pair.b
    address = f"client@{lnurl.base_url.removeprefix('http://')}"
    async with net.client() as c:
        total, chain = await paid_offload(c, net, address)
        paid = decode_payload(chain.request.content, InferenceRequest).payment
        assert paid is not None
        status = await c.payment_status(paid.payment_request)  # A shows B's refund as B stated it
    shown = {p["role"]: p["refund"] for p in status["payees"]}
    assert chain.receipt is not None and chain.receipt.settlement is not None
    statements = {s.role: s for s in chain.settlements}  # verified by the SDK: the provider's and A's
    provider, fee = statements["provider"], statements["router_fee"]
    assert provider == chain.receipt.settlement and provider.payment_hash == chain.provider_payment_hash
    assert provider.used_msat == chain.receipt.price_msat < provider.quoted_msat
    assert provider.refund_msat == provider.quoted_msat - provider.used_msat and provider.kept_msat == 0
    # A's fee (a base fee only) is used whole on any price: nothing to refund
    assert amounts(fee) == (FEE_MSAT, FEE_MSAT, 0, 0)
    assert shown["provider"] == {
        "state": "stated",  # B pays and records its refund in its own database
        "refund_msat": provider.refund_msat,
        "refunded_msat": 0,
        "used_msat": provider.used_msat,
        "kept_msat": 0,
    }

    await eventually(
        lambda: net.balance("client") == CLIENT_BALANCE_MSAT - total + provider.refund_msat,
        what="the provider's refund received",
    )
    assert net.balance("provider") == provider.used_msat and net.balance("requester") == FEE_MSAT
    assert len(lnurl.invoices_made) == 1

    async def provider_refund_paid() -> bool:
        rows = await b.service.pool.fetch("SELECT role, state FROM refunds")
        return [(r["role"], r["state"]) for r in rows] == [("provider", "paid")]

    await eventually_async(provider_refund_paid, what="B's refund recorded as paid")
    # each router kept the statements it saw: B its own, A both (GET /payments/{id} shows them)
    assert await stated(b.service.pool, provider.payment_hash) == amounts(provider)
    assert await stated(a.service.pool, provider.payment_hash) == amounts(provider)
    assert await stated(a.service.pool, fee.payment_hash) == amounts(fee)
    assert await a.service.pool.fetchval("SELECT count(*) FROM refunds") == 0
    metrics = b.service.metrics.registry
    assert metrics.get_sample_value("fedai_router_refunds_total", {"role": "provider", "outcome": "paid"}) == 1
    earned = metrics.get_sample_value("fedai_router_earned_msat_total", {"role": "provider"})
    assert earned == provider.used_msat


async def test_without_a_destination_the_provider_and_the_requester_keep_the_unused_part_and_say_so(
    net: Network,
) -> None:
    b = net.pair.b
    async with net.client() as c:
        total, chain = await paid_offload(c, net, None)
    statements = {s.role: s for s in chain.settlements}
    assert set(statements) == {"provider", "router_fee"}
    provider = statements["provider"]
    assert chain.receipt is not None and provider.used_msat == chain.receipt.price_msat
    assert provider.refund_msat == 0 and provider.kept_msat == provider.quoted_msat - provider.used_msat > 0
    assert statements["router_fee"].refund_msat == 0
    assert net.balance("client") == CLIENT_BALANCE_MSAT - total
    assert net.balance("provider") == provider.quoted_msat
    assert await b.service.pool.fetchval("SELECT count(*) FROM refunds") == 0
    assert await stated(b.service.pool, provider.payment_hash) == amounts(provider)
