"""Refunds of paid streams (docs/payments.md#paid-streams, #refunds): a real router and node on loopback, real
Postgres, each party with its own wallet, and an LNURL-pay destination on loopback invoicing from the client's
wallet. A stream served to `done` carries both payees' signed statements, which the SDK's stream verification
checks; a stream the client cancels is metered and both payees refund what it did not use; a failing destination
is recorded and retried until the refund is paid; a stream the node breaks mid-way refunds the node's unused share
while the router keeps its fee."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fedai.protocol.messages import PaymentProof, PaymentRequest, decode_payload
from fedai.sdk import AsyncClient, RouterError
from fedai.sdk.chain import VerifiedChain
from fedai.sdk.client import Quote
from fedai_node.refund_settings import RefundSettings
from fedai_router.settlement_settings import SettlementSettings
from tests.support.lnurl import LnurlService
from tests.support.paid_network import MODEL, NETWORK, NODE_DUST_MSAT, PaidNetwork, paid_network
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

PROMPT = "Count to three."
MAX_TOKENS = 64  # a ceiling well above what the mock runner writes: most of each share is unused
FEE_PPM = 200_000
CLIENT_BALANCE_MSAT = 10_000_000


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("stream-refund-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    # refunds retried every second on both sides, so a destination that comes back is paid within the test
    settlement = SettlementSettings(refund_dust_msat=1, interval_s=1, refund_retry_s=1)
    node_refunds = RefundSettings(dust_msat=NODE_DUST_MSAT, allow_private=True, retry_s=1)
    async with paid_network(
        database_url,
        db_pool,
        tls,
        tmp_path,
        node_refunds=node_refunds,
        fee_base_msat=0,
        fee_ppm=FEE_PPM,
        settlement=settlement,
    ) as network:
        network.ledger.fee_base_msat = 0  # the payees' wallets hold no float for routing fees
        yield network


@pytest.fixture
async def lnurl(net: PaidNetwork) -> AsyncIterator[LnurlService]:
    service = LnurlService(net.client_wallet.wallet)
    async with serve_app(service.app()) as url:
        service.base_url = url
        yield service


@pytest.fixture
async def client(net: PaidNetwork) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as c:
        yield c


async def paid(client: AsyncClient, net: PaidNetwork, lnurl: LnurlService) -> tuple[Quote, PaymentProof]:
    quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
    address = f"client@{lnurl.base_url.removeprefix('http://')}"
    return quote, await client.pay(quote, net.client_wallet.wallet, network=NETWORK, refund_to=address)


async def streamed(client: AsyncClient, quote: Quote, proof: PaymentProof) -> VerifiedChain:
    quote_id = quote.quote.quote_id
    async with await client.stream(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote_id, payment=proof) as s:
        assert "".join([delta async for delta in s])
        return s.chain


async def node_share(proof: PaymentProof, net: PaidNetwork) -> int:
    """The node's share in the payment request `proof` pays, as the router stored it."""
    event = await net.router.service.payment_store.event(proof.payment_request)
    assert event is not None
    return next(p.amount_msat for p in decode_payload(event.content, PaymentRequest).payees if p.role == "node")


async def refunds(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT role, state, amount_msat, attempts, last_error FROM refunds")
    return {r["role"]: r for r in rows}


async def both_paid(pool: asyncpg.Pool) -> None:
    async def done() -> bool:
        return {role: r["state"] for role, r in (await refunds(pool)).items()} == {"node": "paid", "router_fee": "paid"}

    await eventually_async(done, what="both refunds paid")


async def test_a_paid_stream_states_both_settlements_and_refunds_the_unused_parts(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid(client, net, lnurl)
    chain = await streamed(client, quote, proof)

    statements = {s.role: s for s in chain.settlements}  # checked by the SDK's stream verification
    node, fee = statements["node"], statements["router_fee"]
    assert node.used_msat == chain.record.price_msat and node.refund_msat == node.quoted_msat - node.used_msat > 0
    assert fee.refund_msat == fee.quoted_msat - fee.used_msat > 0
    total = quote.quote.price.total_msat
    refunded = node.refund_msat + fee.refund_msat
    await eventually(
        lambda: net.balance("client") == CLIENT_BALANCE_MSAT - total + refunded, what="both refunds received"
    )
    await both_paid(db_pool)
    assert net.balance("node") == node.used_msat and net.balance("router") == fee.used_msat


async def test_a_cancelled_stream_is_metered_and_both_payees_refund_what_it_did_not_use(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool
) -> None:
    net.runner.token_ms = 100  # slow enough for the client to leave after its first delta
    quote, proof = await paid(client, net, lnurl)
    quote_id = quote.quote.quote_id
    async with await client.stream(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote_id, payment=proof) as s:
        async for _ in s:
            break  # the client leaves: the router cancels the node and meters what it produced

    await both_paid(db_pool)
    owed = await refunds(db_pool)
    node_used, fee_used = net.balance("node"), net.balance("router")
    total = quote.quote.price.total_msat
    assert owed["node"]["amount_msat"] + owed["router_fee"]["amount_msat"] == total - node_used - fee_used
    await eventually(lambda: net.balance("client") == CLIENT_BALANCE_MSAT - node_used - fee_used, what="refunds in")
    metered = await db_pool.fetchval("SELECT count(*) FROM metering_records")
    assert metered == 1 and node_used > 0


async def test_a_failing_destination_on_a_stream_is_recorded_and_retried(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool
) -> None:
    lnurl.failing = True
    quote, proof = await paid(client, net, lnurl)
    await streamed(client, quote, proof)

    async def both_failed_once() -> bool:
        rows = await refunds(db_pool)
        return len(rows) == 2 and all(r["attempts"] >= 1 and r["last_error"] for r in rows.values())

    await eventually_async(both_failed_once, what="both refunds failed and recorded")
    for row in (await refunds(db_pool)).values():
        assert row["state"] in ("pending", "paying") and row["last_error"].startswith("destination:")
        assert "127.0.0.1" not in row["last_error"]  # a reason, never the destination
    lnurl.failing = False
    await both_paid(db_pool)
    assert len(lnurl.invoices_made) == 2


async def test_a_stream_failing_midway_refunds_the_nodes_unused_share_and_the_router_keeps_its_fee(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool
) -> None:
    """The node's `error` event carries no metering: the node still settles on what it produced and refunds the
    rest of its share; the router, with no metering to base a statement on, keeps its fee."""
    net.runner.break_next = 1  # the node fails after its first delta
    quote, proof = await paid(client, net, lnurl)
    with pytest.raises(RouterError):
        await streamed(client, quote, proof)

    async def node_refunded() -> bool:
        return {role: r["state"] for role, r in (await refunds(db_pool)).items()} == {"node": "paid"}

    await eventually_async(node_refunded, what="the node's refund paid")
    share = await node_share(proof, net)
    refunded = (await refunds(db_pool))["node"]["amount_msat"]
    assert 0 < refunded < share and net.balance("node") == share - refunded
    assert net.balance("router") == quote.quote.price.router_fee_msat  # kept whole
