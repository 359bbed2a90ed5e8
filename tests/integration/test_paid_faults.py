"""Paid flow faults over the wire (docs/payments.md#the-flow): a node whose invoice is not what was asked never
gets listed (nothing recorded), the node's `/invoice` refuses what a trusted router did not sign, and one proof
sent to two router replicas at the same moment serves one request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, InvoiceRequest, PayeeInvoice, decode_payload
from fedai.protocol.payment import seal_invoice
from fedai.sdk import AsyncClient, RouterError
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from tests.support.fake_node import FakeNode, register
from tests.support.lightning import Ledger
from tests.support.paid_network import MODEL, NETWORK, PaidNetwork, paid_network
from tests.support.router import running_router
from tests.support.servers import free_port, serve_app
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

PROMPT = "What is 2+2?"
ROGUE_MODEL = "rogue-model"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("paid-faults-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    async with paid_network(database_url, db_pool, tls, tmp_path) as network:
        yield network


class RogueInvoicer:
    """A registered node whose `/invoice` answers what `behaviour` says instead of its own honest invoice."""

    def __init__(self, ledger: Ledger, behaviour: str) -> None:
        self.node = FakeNode(model=ROGUE_MODEL, input_msat=100_000, output_msat=200_000)
        self.ledger = ledger
        self.behaviour = behaviour
        ledger.add_node("rogue", balance_msat=0)

    async def invoice(self, request: Request) -> Response:
        asked = decode_payload(decode_event(await request.body()).content, InvoiceRequest)
        amount = asked.amount_msat + (1 if self.behaviour == "amount" else 0)
        made = self.ledger.create_invoice("rogue", amount, "rogue", 600)
        signer = Keys.generate() if self.behaviour == "signer" else self.node.keys
        payload = PayeeInvoice(
            role="node",
            quote=asked.quote,
            client=asked.client,
            router=asked.router,
            amount_msat=amount,
            payment_hash=made.payment_hash,
            bolt11=made.bolt11,
            expires_at=asked.expires_at,
        )
        if self.behaviour == "bolt11":  # the signed event lists another invoice than the one named by its hash
            other = self.ledger.create_invoice("rogue", amount, "rogue", 600)
            payload = msgspec.structs.replace(payload, bolt11=other.bolt11)
        return Response(seal_invoice(signer, payload).to_json(), media_type="application/json")


@pytest.mark.parametrize("behaviour", ["signer", "amount", "bolt11"])
async def test_a_node_invoice_that_is_not_what_was_asked_is_never_listed(
    net: PaidNetwork, db_pool: asyncpg.Pool, behaviour: str
) -> None:
    rogue = RogueInvoicer(net.ledger, behaviour)
    app = Starlette(routes=[Route("/invoice", rogue.invoice, methods=["POST"])])
    async with serve_app(app) as url:
        rogue.node.endpoint = url
        response = await register(net.router.url, net.router.pubkey, rogue.node.keys, rogue.node.descriptor())
        assert response.status_code == 200, response.text
        async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as client:
            quote = await client.quote(ROGUE_MODEL, max_tokens=16, prompt=PROMPT)
            assert quote.quote.node == rogue.node.keys.pubkey
            with pytest.raises(RouterError) as refused:
                await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    assert refused.value.code == ErrorCode.UPSTREAM_ERROR
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests") == 0
    assert net.ledger.payments == []


async def test_the_nodes_invoice_endpoint_refuses_what_its_router_did_not_sign(net: PaidNetwork) -> None:
    router = net.router.keys
    now = int(time.time())
    ask = InvoiceRequest(
        quote="q1", client=Keys.generate().pubkey, router=router.pubkey, amount_msat=5_000, expires_at=now + 300
    )
    cases = {
        "a stranger's key": (
            seal(Keys.generate(), Kind.INVOICE_REQUEST, ask, to=net.node.keys.pubkey, nonce=True),
            403,
        ),
        "another router named": (
            seal(
                router,
                Kind.INVOICE_REQUEST,
                msgspec.structs.replace(ask, router=Keys.generate().pubkey),
                to=net.node.keys.pubkey,
                nonce=True,
            ),
            400,
        ),
        "an expiry a day ahead": (
            seal(
                router,
                Kind.INVOICE_REQUEST,
                msgspec.structs.replace(ask, expires_at=now + 86_400),
                to=net.node.keys.pubkey,
                nonce=True,
            ),
            400,
        ),
    }
    async with httpx.AsyncClient() as http:
        for what, (event, status) in cases.items():
            response = await http.post(net.node.endpoint + "/invoice", content=event.to_json())
            assert response.status_code == status, (what, response.text)
        honest = seal(router, Kind.INVOICE_REQUEST, ask, to=net.node.keys.pubkey, nonce=True)
        first = (await http.post(net.node.endpoint + "/invoice", content=honest.to_json())).json()
        retried = seal(router, Kind.INVOICE_REQUEST, ask, to=net.node.keys.pubkey, nonce=True)
        second = (await http.post(net.node.endpoint + "/invoice", content=retried.to_json())).json()
    assert first["pubkey"] == net.node.keys.pubkey and first["kind"] == Kind.PAYMENT_INVOICE
    same = [decode_payload(e["content"], PayeeInvoice).payment_hash for e in (first, second)]
    assert same[0] == same[1]  # the same binding, the same invoice
    assert len([i for i in net.ledger.invoices.values() if i.node == "node"]) == 1


async def test_one_proof_sent_to_two_replicas_at_once_serves_one_request(net: PaidNetwork, database_url: str) -> None:
    service = net.router.service
    async with AsyncExitStack() as stack:
        replica = await stack.enter_async_context(
            running_router(
                database_url,
                keys=net.router.keys,
                node_timeout_ms=5_000,
                require_payment=True,
                wallet=net.router_wallet.spec,
                ln_network=NETWORK,
                fee_base_msat=service.settings.fee_base_msat,
            )
        )
        await eventually(
            lambda: net.node.keys.pubkey in replica.service.registry.nodes, within=10, what="replica knows the node"
        )
        a = await stack.enter_async_context(AsyncClient(net.router.url, router_pubkey=net.router.pubkey))
        b = await stack.enter_async_context(AsyncClient(replica.url, a.keys, router_pubkey=net.router.pubkey))
        quote = await a.quote(MODEL, max_tokens=16, prompt=PROMPT)
        proof = await a.pay(quote, net.client_wallet.wallet, network=NETWORK)
        ask = {"max_tokens": 16, "quote_id": quote.quote.quote_id, "payment": proof}
        results = await asyncio.gather(
            a.infer(MODEL, PROMPT, **ask), b.infer(MODEL, PROMPT, **ask), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], RouterError)
    assert refused[0].code in (ErrorCode.PAYMENT_IN_USE, ErrorCode.PAYMENT_USED)
    assert net.runner.served == 1


async def test_a_paying_node_refuses_unpaid_work_and_streams(net: PaidNetwork) -> None:
    """A router that forwards an unpaid request (say, one without ROUTER_REQUIRE_PAYMENT) gets 402 from the node."""
    unpaid = InferenceRequest(model=MODEL, prompt=PROMPT, max_tokens=16, client=Keys.generate().pubkey)
    async with httpx.AsyncClient() as http:
        for path, stream in (("/infer", False), ("/infer/stream", True)):
            payload = msgspec.structs.replace(unpaid, stream=stream)
            event = seal(net.router.keys, Kind.INFER_REQUEST, payload, to=net.node.keys.pubkey, nonce=True)
            response = await http.post(net.node.endpoint + path, content=event.to_json())
            assert response.status_code == 402, (path, response.text)
            assert response.json()["error"]["code"] == "payment_required"
    assert net.runner.served == 0


async def test_a_node_without_a_wallet_cannot_be_paid(net: PaidNetwork, db_pool: asyncpg.Pool) -> None:
    """A paying router whose quote names a node that takes no payment (no NODE_WALLET) says so at /pay."""
    port = free_port()
    unpaid = NodeSettings(
        keys=Keys.generate(),
        router_pubkeys=frozenset({net.router.pubkey}),
        runner="mock",
        model_id=ROGUE_MODEL,
        port=port,
        endpoint=f"http://127.0.0.1:{port}",
        router_endpoints=(net.router.url,),
        heartbeat_ms=200,
    )
    async with serve_app(create_app(unpaid), port=port):
        await eventually(lambda: unpaid.keys.pubkey in net.router.service.registry.nodes, what="node registered")
        async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as client:
            quote = await client.quote(ROGUE_MODEL, max_tokens=16, prompt=PROMPT)
            with pytest.raises(RouterError) as refused:
                await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
    assert refused.value.code == ErrorCode.UPSTREAM_ERROR and "takes no payment" in refused.value.message
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests") == 0
