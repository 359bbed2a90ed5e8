"""Usage-based settlement end to end (docs/payments.md#refunds): a paid `/infer` whose client named a refund
destination (an LNURL-pay server on loopback, invoicing from the client's own wallet) gets back, from the node's
wallet and from the router's, the unused part of each share; both statements are signed in the chain the SDK
verifies; a bad destination is refused before anything is claimed; metrics count what happened; GET /payments/{id}
shows each refund to the paying client only, and `fedai earnings` subtracts the refunds paid."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from fedai.cli.earnings import earnings_rows, totals
from fedai.cli.main import cli
from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import InferenceRequest, PaymentProof, decode_payload
from fedai.sdk import AsyncClient, RouterError
from fedai.sdk.chain import VerifiedChain
from fedai.sdk.errors import InvalidRequest
from fedai_router.settlement_settings import SettlementSettings
from tests.support.lnurl import LnurlService
from tests.support.paid_network import MODEL, NETWORK, NODE_DUST_MSAT, PaidNetwork, paid_network
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

PROMPT = "What is 2+2?"
MAX_TOKENS = 64  # a ceiling well above what the mock runner writes: most of the node's share is unused
FEE_PPM = 200_000  # the router's fee: 20 % of the work, so its unused part is worth refunding too
CLIENT_BALANCE_MSAT = 10_000_000


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("refund-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    settlement = SettlementSettings(refund_dust_msat=1)
    async with paid_network(
        database_url, db_pool, tls, tmp_path, fee_base_msat=0, fee_ppm=FEE_PPM, settlement=settlement
    ) as network:
        # routing fees are the payer's: a payee pays its refund's fee from its own funds, which these wallets,
        # holding exactly what they were paid, do not have (runbooks/payments.md, "a wallet float")
        network.ledger.fee_base_msat = 0
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


async def paid_infer(client: AsyncClient, net: PaidNetwork, refund_to: str) -> tuple[int, VerifiedChain]:
    quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
    proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK, refund_to=refund_to)
    assert proof.refund_to == refund_to
    chain = await client.infer(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote.quote.quote_id, payment=proof)
    return quote.quote.price.total_msat, chain


async def refund_states(pool: asyncpg.Pool) -> dict[str, str]:
    return {r["role"]: r["state"] for r in await pool.fetch("SELECT role, state FROM refunds")}


async def test_each_payee_refunds_its_unused_share_and_signs_what_it_kept(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool
) -> None:
    address = f"client@{lnurl.base_url.removeprefix('http://')}"
    total, chain = await paid_infer(client, net, address)

    statements = {s.role: s for s in chain.settlements}
    node, fee = statements["node"], statements["router_fee"]
    assert node.used_msat == chain.record.price_msat and node.refund_msat == node.quoted_msat - node.used_msat
    assert node.refund_msat >= NODE_DUST_MSAT and node.kept_msat == 0
    assert fee.used_msat == -(-chain.record.price_msat * FEE_PPM // 1_000_000)
    assert fee.refund_msat == fee.quoted_msat - fee.used_msat > 0
    refunded = node.refund_msat + fee.refund_msat
    await eventually(
        lambda: net.balance("client") == CLIENT_BALANCE_MSAT - total + refunded, what="both refunds received"
    )
    paid = {"node": "paid", "router_fee": "paid"}

    async def both_recorded() -> bool:
        return await refund_states(db_pool) == paid

    await eventually_async(both_recorded, what="both refunds recorded as paid")
    assert net.balance("node") == node.used_msat and net.balance("router") == fee.used_msat
    assert len(lnurl.invoices_made) == 2

    metrics = net.router.service.metrics.registry
    assert metrics.get_sample_value("fedai_router_refunds_total", {"role": "router_fee", "outcome": "paid"}) == 1
    assert metrics.get_sample_value("fedai_router_earned_msat_total", {"role": "router_fee"}) == fee.used_msat
    for role in ("node", "router_fee"):
        proofs = {"role": role, "outcome": "consumed"}
        assert metrics.get_sample_value("fedai_router_payment_proofs_total", proofs) == 1
    calls = {"method": "pay_invoice", "outcome": "ok"}
    assert metrics.get_sample_value("fedai_router_wallet_calls_total", calls) == 1


async def test_without_a_destination_each_payee_keeps_the_unused_part_and_says_so(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
    proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    chain = await client.infer(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote.quote.quote_id, payment=proof)

    for statement in chain.settlements:
        assert statement.refund_msat == 0
        assert statement.kept_msat == statement.quoted_msat - statement.used_msat > 0
    assert len(chain.settlements) == 2 and await refund_states(db_pool) == {}


async def test_a_bad_refund_destination_is_refused_before_the_proof_is_claimed(
    net: PaidNetwork, client: AsyncClient
) -> None:
    quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
    with pytest.raises(InvalidRequest, match="refund_to"):  # the SDK refuses it before paying anything
        await client.pay(quote, net.client_wallet.wallet, network=NETWORK, refund_to="ftp://example.invalid/r")
    assert net.balance("client") == CLIENT_BALANCE_MSAT
    proof: PaymentProof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    bad = msgspec.structs.replace(proof, refund_to="ftp://example.invalid/refund")
    with pytest.raises(RouterError) as refused:
        await client.infer(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote.quote.quote_id, payment=bad)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID
    states = set((await net.router.service.payment_store.states(proof.payment_request)).values())
    assert states == {"issued"} and net.runner.served == 0


async def fedai(*args: str) -> tuple[int, str, str]:
    """One `fedai` command in-process at 80 columns (in a thread: the servers run on this loop)."""
    result = await asyncio.to_thread(CliRunner(env={"COLUMNS": "80"}).invoke, cli, list(args))
    return result.exit_code, result.stdout, result.stderr


async def test_payment_status_shows_each_refund_to_its_client_only_and_earnings_subtract_them(
    net: PaidNetwork, client: AsyncClient, lnurl: LnurlService, db_pool: asyncpg.Pool, database_url: str
) -> None:
    address = f"client@{lnurl.base_url.removeprefix('http://')}"
    _, chain = await paid_infer(client, net, address)
    statements = {s.role: s for s in chain.settlements}

    async def both_recorded() -> bool:
        return await refund_states(db_pool) == {"node": "paid", "router_fee": "paid"}

    await eventually_async(both_recorded, what="both refunds paid")
    request_id = decode_payload(chain.request.content, InferenceRequest).payment
    assert request_id is not None
    status = await client.payment_status(request_id.payment_request)
    shown = {p["role"]: p["refund"] for p in status["payees"]}
    # here the node shares the router's database, so its refund's own state shows (elsewhere: `stated`)
    for role, statement in statements.items():
        assert shown[role] == {
            "state": "paid",
            "refund_msat": statement.refund_msat,
            "refunded_msat": statement.refund_msat,
            "used_msat": statement.used_msat,
            "kept_msat": statement.kept_msat,
        }
    assert address not in json.dumps(status) and lnurl.base_url.removeprefix("http://") not in json.dumps(status)
    async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as stranger:  # another client's key
        with pytest.raises(RouterError) as refused:
            await stranger.payment_status(request_id.payment_request)
    assert refused.value.http_status == 404

    fee, node = statements["router_fee"], statements["node"]
    router_rows = await earnings_rows(database_url, "router", 1)
    assert totals(router_rows) == {"router_fee": fee.used_msat, "node": node.quoted_msat}  # node shares never netted
    assert totals(router_rows, "refunded_msat") == {"router_fee": fee.refund_msat, "node": 0}
    assert totals(router_rows)["router_fee"] == net.balance("router")
    node_rows = await earnings_rows(database_url, "node", 1)
    assert [(r["key"], r["model"], r["refunded_msat"], r["net_msat"]) for r in node_rows] == [
        (net.router.pubkey, MODEL, node.refund_msat, node.used_msat)
    ]
    assert node.used_msat == net.balance("node")
    code, out, err = await fedai("earnings", "--role", "node", "--database-url", database_url)
    assert code == 0, err
    assert f"total node share: {node.used_msat} msat net ({node.refund_msat} refunded)" in out
    assert MODEL in out and max(len(line) for line in out.splitlines()) <= 80
    await db_pool.execute("UPDATE payment_claims SET model = NULL")  # a claim made before migrations/0015
    assert [r["model"] for r in await earnings_rows(database_url, "node", 1)] == ["?"]


async def test_the_fee_an_operator_set_is_the_one_quoted_and_stated(net: PaidNetwork, client: AsyncClient) -> None:
    operator_ppm = 500_000  # set at run time (the admin API applies it the same way on every replica)
    net.router.service.fees.apply({"fee_ppm": operator_ppm})
    quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
    work = quote.quote.price.input_msat + quote.quote.price.output_msat
    assert quote.quote.price.router_fee_msat == -(-work * operator_ppm // 1_000_000)
    proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    chain = await client.infer(MODEL, PROMPT, max_tokens=MAX_TOKENS, quote_id=quote.quote.quote_id, payment=proof)

    fee = next(s for s in chain.settlements if s.role == "router_fee")
    assert fee.quoted_msat == quote.quote.price.router_fee_msat
    assert fee.used_msat == -(-chain.record.price_msat * operator_ppm // 1_000_000) < fee.quoted_msat
