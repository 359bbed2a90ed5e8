"""A paid `/infer/stream` end to end (docs/payments.md#paid-streams): a real router and a real node on loopback,
real Postgres, each party with its own wallet (tests/support/paid_network.py). The proof is claimed before the
stream starts (a refusal is a plain HTTP error), the paid node alone serves it, the claims are consumed once the
node's stream opened, and given back when the node failed before its first chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.requests import ClientDisconnect, Request

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, PaymentProof, PaymentRequest, decode_payload
from fedai.sdk import AsyncClient, PaymentRequiredError, RouterError
from fedai.sdk.chain import VerifiedChain
from fedai.sdk.client import Quote
from tests.support.paid_network import MODEL, NETWORK, ROUTER_FEE_MSAT, PaidNetwork, paid_network
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration

PROMPT = "Count to three."


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("paid-stream-tls"))


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


async def stream(client: AsyncClient, quote: Quote | None, proof: PaymentProof | None) -> tuple[str, VerifiedChain]:
    quote_id = None if quote is None else quote.quote.quote_id
    async with await client.stream(MODEL, PROMPT, max_tokens=16, quote_id=quote_id, payment=proof) as s:
        text = "".join([delta async for delta in s])
        return text, s.chain


async def states(net: PaidNetwork, proof: PaymentProof) -> set[str]:
    return set((await net.router.service.payment_store.states(proof.payment_request)).values())


async def node_claims(pool: asyncpg.Pool) -> list[str]:
    return [r["state"] for r in await pool.fetch("SELECT state FROM payment_claims")]


async def test_a_paid_stream_is_served_by_the_paid_node_and_consumes_the_proof(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    price = quote.quote.price
    text, chain = await stream(client, quote, proof)
    assert text and chain.output == text and chain.node == net.node.keys.pubkey
    assert net.balance("node") == price.input_msat + price.output_msat > 0
    assert net.balance("router") == price.router_fee_msat == ROUTER_FEE_MSAT
    assert await states(net, proof) == {"consumed"}
    assert await node_claims(db_pool) == ["consumed"]
    with pytest.raises(RouterError) as again:  # one proof, one stream
        await stream(client, quote, proof)
    assert again.value.code == ErrorCode.PAYMENT_USED
    assert net.runner.served == 1


async def test_an_unpaid_stream_gets_a_plain_402_with_the_payment_request(
    net: PaidNetwork, client: AsyncClient
) -> None:
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    with pytest.raises(PaymentRequiredError) as refused:
        await stream(client, quote, None)
    assert refused.value.status == 402 and refused.value.payment_request is not None
    request = decode_payload(refused.value.payment_request.content, PaymentRequest)
    assert request.quote == quote.quote.quote_id and request.router == net.router.pubkey
    proof = await client.pay(
        quote, net.client_wallet.wallet, payment_request=refused.value.payment_request, network=NETWORK
    )
    text, _ = await stream(client, quote, proof)
    assert text and net.runner.served == 1


async def test_a_stream_with_a_bad_preimage_is_refused_before_it_starts(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    node_hash = next(iter(proof.preimages))
    forged = PaymentProof(payment_request=proof.payment_request, preimages={**proof.preimages, node_hash: "22" * 32})
    with pytest.raises(RouterError) as refused:
        await stream(client, quote, forged)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID and refused.value.status == 402
    assert await states(net, proof) == {"issued"} and await node_claims(db_pool) == []
    assert net.runner.served == 0


async def test_a_node_failing_before_its_first_chunk_gives_the_proof_back(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    net.runner.fail_next = 1  # the node fails before any output
    with pytest.raises(RouterError) as failed:
        await stream(client, quote, proof)
    assert failed.value.code == ErrorCode.UPSTREAM_ERROR
    assert await states(net, proof) == {"released"}  # still valid for a retry on the same node
    assert await node_claims(db_pool) == ["released"]
    text = await retry_until_served(client, quote, proof)
    assert text and await states(net, proof) == {"consumed"}
    assert net.runner.served == 1 and len(net.ledger.payments) == 2  # paid once


async def retry_until_served(client: AsyncClient, quote: Quote, proof: PaymentProof) -> str:
    """The same proof again, while the failed node cools down (`no_capacity` until then)."""
    for _ in range(100):
        try:
            text, _ = await stream(client, quote, proof)
            return text
        except RouterError as err:
            if err.code != ErrorCode.NO_CAPACITY:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the retry was never served")


async def test_a_stream_failing_midway_keeps_the_claim_consumed(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    quote, proof = await paid_quote(client, net)
    net.runner.break_next = 1  # the node fails after its first delta: it did work, and meters it
    with pytest.raises(RouterError):
        await stream(client, quote, proof)
    assert await states(net, proof) == {"consumed"}
    assert await node_claims(db_pool) == ["consumed"]
    with pytest.raises(RouterError) as again:
        await stream(client, quote, proof)
    assert again.value.code == ErrorCode.PAYMENT_USED


async def test_the_node_refuses_a_stream_whose_invoice_is_not_settled_in_its_wallet(
    net: PaidNetwork, client: AsyncClient, db_pool: asyncpg.Pool
) -> None:
    """Preimages taken from the (test-only) ledger without paying: the router's lean check passes them, the node
    asks its own wallet before streaming, finds its invoice unpaid and refuses; the router gives the claim back."""
    quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
    with pytest.raises(PaymentRequiredError) as refused:
        await stream(client, quote, None)
    event = refused.value.payment_request
    assert event is not None
    request = decode_payload(event.content, PaymentRequest)
    leaked = {p.payment_hash: net.ledger.invoices[p.payment_hash].preimage for p in request.payees}
    with pytest.raises(RouterError) as unpaid:
        await stream(client, quote, PaymentProof(payment_request=event.id, preimages=leaked))
    assert unpaid.value.code == ErrorCode.PAYMENT_INVALID
    assert set((await net.router.service.payment_store.states(event.id)).values()) == {"released"}
    assert await node_claims(db_pool) == [] and net.runner.served == 0 and net.ledger.payments == []


async def test_a_caller_gone_before_the_stream_began_gets_the_proof_back(net: PaidNetwork, client: AsyncClient) -> None:
    """The proof is claimed before the stream's headers; a caller that left before its body ran is served
    nothing, so the claim is released (and the quote given back): the same proof serves the next request."""
    quote, proof = await paid_quote(client, net)
    asked = InferenceRequest(
        model=MODEL, prompt=PROMPT, max_tokens=16, stream=True, quote_id=quote.quote.quote_id, payment=proof
    )
    body = seal(client.keys, Kind.INFER_REQUEST, asked, to=net.router.pubkey, nonce=True).to_json()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"spec_version": "2.4"},
        "method": "POST",
        "path": "/infer/stream",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def gone(_message: object) -> None:
        raise OSError("the caller hung up")

    response = await net.router.service.infer_stream.handle(Request(scope, receive))
    assert response.status_code == 200 and await states(net, proof) == {"paid"}  # held while the stream starts
    with pytest.raises(ClientDisconnect):
        await response(scope, receive, gone)
    assert await states(net, proof) == {"released"} and net.runner.served == 0
    text, _ = await stream(client, quote, proof)
    assert text and await states(net, proof) == {"consumed"} and net.runner.served == 1
