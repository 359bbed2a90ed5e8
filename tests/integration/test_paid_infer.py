"""A paid `/infer` end to end (docs/payments.md#the-flow): a real router and a real node on loopback, real
Postgres, each party with its own wallet (test-only wallets over an in-memory ledger: tests/support/paid_network.py).
The client pays the node and the router's fee from its own wallet; nothing meant for the node reaches the router;
a proof serves one request; a failed node gives the proof back; a wallet outage consumes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fedai.protocol.errors import ErrorCode
from fedai.protocol.keys import Keys
from fedai.protocol.messages import PaymentProof, PaymentRequest, decode_payload
from fedai.sdk import AsyncClient, Client, PaymentRequiredError, RouterError
from fedai.sdk.client import Quote
from tests.support.paid_network import MODEL, NETWORK, ROUTER_FEE_MSAT, PaidNetwork, paid_network
from tests.support.payments import new_preimage
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration

PROMPT = "What is 2+2?"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("paid-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    async with paid_network(database_url, db_pool, tls, tmp_path) as network:
        yield network


@pytest.fixture
async def client(net: PaidNetwork) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as c:
        yield c


async def paid_quote(client: AsyncClient, net: PaidNetwork) -> tuple[Quote, PaymentProof]:
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    return quote, await client.pay(quote, net.client_wallet.wallet, network=NETWORK)


async def infer(client: AsyncClient, quote: Quote, proof: PaymentProof | None) -> object:
    return await client.infer(MODEL, PROMPT, max_tokens=16, quote_id=quote.quote.quote_id, payment=proof)


async def states(net: PaidNetwork, proof: PaymentProof) -> set[str]:
    return set((await net.router.service.payment_store.states(proof.payment_request)).values())


async def node_claims(pool: asyncpg.Pool) -> list[str]:
    return [r["state"] for r in await pool.fetch("SELECT state FROM payment_claims")]


async def test_paid_request_pays_each_payee_from_the_clients_wallet(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    price = quote.quote.price
    chain = await infer(client, quote, proof)
    assert chain.node == net.node.keys.pubkey  # type: ignore[attr-defined]
    # the node's share went to the node's own wallet, the fee to the router's own; nothing else moved
    assert net.balance("node") == price.input_msat + price.output_msat > 0
    assert net.balance("router") == price.router_fee_msat == ROUTER_FEE_MSAT
    assert len(net.ledger.payments) == 2 and {p.payer for p in net.ledger.payments} == {"client"}
    assert await states(net, proof) == {"consumed"}
    assert await node_claims(db_pool) == ["consumed"]
    assert net.runner.served == 1


async def test_402_carries_a_payment_request_the_client_verifies_and_pays(
    net: PaidNetwork, client: AsyncClient
) -> None:
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    with pytest.raises(PaymentRequiredError) as refused:
        await infer(client, quote, None)
    assert refused.value.status == 402 and refused.value.payment_request is not None
    request = decode_payload(refused.value.payment_request.content, PaymentRequest)
    assert {p.role: p.payee for p in request.payees} == {"node": net.node.keys.pubkey, "router_fee": net.router.pubkey}
    proof = await client.pay(
        quote, net.client_wallet.wallet, payment_request=refused.value.payment_request, network=NETWORK
    )
    assert proof.payment_request == refused.value.payment_request.id
    await infer(client, quote, proof)
    with pytest.raises(PaymentRequiredError) as no_quote:  # without a quote there is nothing to invoice yet
        await client.infer(MODEL, PROMPT, max_tokens=16)
    assert no_quote.value.payment_request is None
    assert net.runner.served == 1


async def test_a_preimage_that_does_not_match_is_refused(net: PaidNetwork, client: AsyncClient) -> None:
    quote, proof = await paid_quote(client, net)
    node_hash = next(h for h in proof.preimages)
    forged = PaymentProof(payment_request=proof.payment_request, preimages={**proof.preimages, node_hash: "11" * 32})
    with pytest.raises(RouterError) as refused:
        await infer(client, quote, forged)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID
    assert await states(net, proof) == {"issued"} and net.runner.served == 0


async def test_a_preimage_of_another_requests_invoice_proves_nothing(net: PaidNetwork, client: AsyncClient) -> None:
    quote_a, proof_a = await paid_quote(client, net)
    _, proof_b = await paid_quote(client, net)
    mixed = PaymentProof(payment_request=proof_a.payment_request, preimages=dict(proof_b.preimages))
    with pytest.raises(RouterError) as refused:
        await infer(client, quote_a, mixed)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID
    preimage, payment_hash = new_preimage()  # a matching preimage of a hash the request does not list
    extra = PaymentProof(
        payment_request=proof_a.payment_request, preimages={**proof_a.preimages, payment_hash: preimage}
    )
    with pytest.raises(RouterError) as unlisted:
        await infer(client, quote_a, extra)
    assert unlisted.value.code == ErrorCode.PAYMENT_INVALID
    assert await states(net, proof_a) == {"issued"} and net.runner.served == 0


async def test_one_proof_serves_one_request_even_sent_twice_at_once(net: PaidNetwork, client: AsyncClient) -> None:
    quote, proof = await paid_quote(client, net)
    results = await asyncio.gather(infer(client, quote, proof), infer(client, quote, proof), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], RouterError)
    assert refused[0].code in (ErrorCode.PAYMENT_IN_USE, ErrorCode.PAYMENT_USED)
    with pytest.raises(RouterError) as again:
        await infer(client, quote, proof)
    assert again.value.code == ErrorCode.PAYMENT_USED
    assert net.runner.served == 1


async def test_another_clients_key_cannot_use_the_proof(net: PaidNetwork, client: AsyncClient) -> None:
    quote, proof = await paid_quote(client, net)
    async with AsyncClient(net.router.url, Keys.generate(), router_pubkey=net.router.pubkey) as thief:
        with pytest.raises(RouterError) as refused:
            await infer(thief, quote, proof)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID
    assert await states(net, proof) == {"issued"}
    await infer(client, quote, proof)  # still the payer's


async def test_an_expired_payment_request_is_refused(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    # time passes: the stored request's expiry (what the claim checks) moves into the past
    request_id = proof.payment_request
    await db_pool.execute("UPDATE payment_requests SET expires_at = now() - interval '1 s' WHERE id = $1", request_id)
    await db_pool.execute(
        "UPDATE payment_payees SET expires_at = now() - interval '1 s' WHERE request_id = $1", request_id
    )
    with pytest.raises(RouterError) as refused:
        await infer(client, quote, proof)
    assert refused.value.code == ErrorCode.PAYMENT_EXPIRED
    assert net.runner.served == 0


async def test_a_node_failing_after_payment_gives_the_proof_back_for_a_retry(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    net.runner.fail_next = 1
    with pytest.raises(RouterError) as failed:
        await infer(client, quote, proof)
    assert failed.value.code == ErrorCode.UPSTREAM_ERROR
    assert await states(net, proof) == {"released"}
    assert await node_claims(db_pool) == ["released"]
    await retry_until_served(client, quote, proof)
    assert net.runner.served == 1 and await states(net, proof) == {"consumed"}
    with pytest.raises(RouterError) as reused:
        await infer(client, quote, proof)
    assert reused.value.code == ErrorCode.PAYMENT_USED
    assert len(net.ledger.payments) == 2  # paid once


async def retry_until_served(client: AsyncClient, quote: Quote, proof: PaymentProof) -> None:
    """The same proof again, while the failed node cools down (`no_capacity` until then)."""
    for _ in range(100):
        try:
            await infer(client, quote, proof)
            return
        except RouterError as err:
            if err.code != ErrorCode.NO_CAPACITY:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the retry was never served")


async def test_the_node_wallet_down_consumes_nothing(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    net.node_wallet.fake.faults.status = 503
    with pytest.raises(RouterError) as down:
        await infer(client, quote, proof)
    assert down.value.code == ErrorCode.PAYMENT_BACKEND_UNAVAILABLE and down.value.status == 503
    assert await states(net, proof) == {"released"} and await node_claims(db_pool) == []
    net.node_wallet.fake.faults.status = None
    await retry_until_served(client, quote, proof)
    assert net.runner.served == 1


async def test_pay_with_the_router_wallet_down_records_nothing(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    net.router_wallet.fake.faults.status = 503
    with pytest.raises(RouterError) as down:
        await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    assert down.value.code == ErrorCode.PAYMENT_BACKEND_UNAVAILABLE
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests") == 0
    assert net.ledger.payments == []
    net.router_wallet.fake.faults.status = None
    proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    await infer(client, quote, proof)


async def test_an_invoice_not_settled_in_the_nodes_wallet_is_refused_by_the_node(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    """Preimages taken from the (test-only) ledger without paying: the router's lean check passes them, the node
    asks its own wallet, finds its invoice unpaid and refuses; the router gives the claim back."""
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    with pytest.raises(PaymentRequiredError) as refused:
        await infer(client, quote, None)
    event = refused.value.payment_request
    assert event is not None
    request = decode_payload(event.content, PaymentRequest)
    leaked = {p.payment_hash: net.ledger.invoices[p.payment_hash].preimage for p in request.payees}
    with pytest.raises(RouterError) as unpaid:
        await infer(client, quote, PaymentProof(payment_request=event.id, preimages=leaked))
    assert unpaid.value.code == ErrorCode.PAYMENT_INVALID
    assert set((await net.router.service.payment_store.states(event.id)).values()) == {"released"}
    assert await node_claims(db_pool) == [] and net.runner.served == 0 and net.ledger.payments == []


async def test_paying_twice_answers_the_same_request_and_pays_once(net: PaidNetwork, client: AsyncClient) -> None:
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    first = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    again = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    assert again == first  # the stored request while it is valid; the wallet answers the first payments
    assert len(net.ledger.payments) == 2
    await infer(client, quote, first)
    assert net.runner.served == 1


async def test_the_sync_client_pays_and_infers(net: PaidNetwork) -> None:
    def pay_and_infer() -> str:
        with Client(net.router.url, router_pubkey=net.router.pubkey) as sync:
            quote = sync.quote(MODEL, max_tokens=16, prompt=PROMPT)
            proof = sync.pay(quote, net.client_wallet.spec, network=NETWORK)  # opened and closed in its own loop
            return sync.infer(MODEL, PROMPT, max_tokens=16, quote_id=quote.quote.quote_id, payment=proof).node

    assert await asyncio.to_thread(pay_and_infer) == net.node.keys.pubkey
    assert net.balance("router") == ROUTER_FEE_MSAT and net.runner.served == 1


async def test_a_slow_node_wallet_consumes_nothing(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    net.node_wallet.fake.faults.delay_s = 3.0  # past the wallet's 2 s bound, within the router's 5 s node timeout
    with pytest.raises(RouterError) as slow:
        await infer(client, quote, proof)
    assert slow.value.code == ErrorCode.PAYMENT_BACKEND_UNAVAILABLE and slow.value.retry_after_ms is not None
    assert await states(net, proof) == {"released"} and await node_claims(db_pool) == []
    net.node_wallet.fake.faults.delay_s = 0.0
    await retry_until_served(client, quote, proof)
    assert net.runner.served == 1
