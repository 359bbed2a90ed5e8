"""The OpenAI edge of a paying router (docs/payments.md#the-openai-edge), driven by the official `openai`
package: a caller without a wallet binding gets 402 `payment_required` carrying the payment request in OpenAI's
error shape; an API key bound to the client's own NWC connection is paid from that wallet (the NIP-47 wallet
service on the embedded relay answers from an LNbits wallet: tests/support/nwc_service.py) and served, the
money going from the client's wallet to the node's and the router's (LNbits wallets too); past the budget the
call is refused with 402 `payment_refused` and nothing moves. With refund links (ROUTER_EDGE_REFUNDS) the unused
part of the node's share goes back to the bound wallet, for a plain and a streamed call."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import openai
import pytest

from fedai.lnbits import LnbitsWallet
from fedai.payments.backends.lnbits import LnbitsBackend, open_lnbits
from fedai.payments.spec import parse_spec
from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import PaymentRequest, decode_payload, estimate_tokens, prompt_material
from fedai.protocol.openai_map import chat_request
from fedai.protocol.payment import check_payment_request
from fedai.sdk import AsyncClient, RouterError
from fedai.sdk.chain import VerifiedChain
from fedai.sdk.openai import NostrAuth, PaidCall, verify_completion
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from fedai_node.refund_settings import RefundSettings
from fedai_router.client_wallets import parse_wallet_bindings
from fedai_router.openai_api.edge_refunds import MAX_INVOICES
from fedai_router.openai_api.paying import MAX_FEE_MSAT
from fedai_router.store.budgets import spent
from tests.support.nwc_service import NwcService
from tests.support.paid_network import MODEL, ScriptedRunner
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

NETWORK = "bitcoin"  # LNbits' FakeWallet invoices are lnbc…
PRICE_MSAT = 1_000_000  # per 1k tokens, in and out: 1 sat a token, so every share is whole sats (LNbits invoices sats)
FEE_MSAT = 1_000
MAX_TOKENS = 16
PARAMS: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "What is 2+2?"}],
    "max_tokens": MAX_TOKENS,
}
BOUND_KEY, UNBOUND_KEY = "fk-bound-0123456789abcdef", "fk-unbound-0123456789abcdef"
BOUND_CLIENT, UNBOUND_CLIENT, NIP98_CLIENT = Keys.generate(), Keys.generate(), Keys.generate()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def call_total_msat() -> int:
    """What one PARAMS call costs at most (the quote the router makes for it): input, all output, the fee."""
    input_tokens = estimate_tokens(len(prompt_material(chat_request(PARAMS))))
    return (input_tokens + MAX_TOKENS) * PRICE_MSAT // 1000 + FEE_MSAT


# one call fits (its amount plus the fee allowance of its two invoices), two do not
BUDGET_MSAT = call_total_msat() + 2 * MAX_FEE_MSAT + call_total_msat() - 1


@dataclass
class PaidEdge:
    router: RunningRouter
    node: NodeSettings
    runner: ScriptedRunner
    client: LnbitsBackend
    node_wallet: LnbitsBackend
    router_wallet: LnbitsBackend


def backend(wallet: LnbitsWallet, *, admin: bool = False) -> LnbitsBackend:
    return open_lnbits(parse_spec(wallet.uri(admin=admin)))


@pytest.fixture
async def edge(
    database_url: str,
    db_pool: asyncpg.Pool,
    relay_url: str,
    lnbits_wallet: Callable[..., LnbitsWallet],
    tmp_path: Path,
) -> AsyncIterator[PaidEdge]:
    async with running_edge(database_url, db_pool, relay_url, lnbits_wallet, tmp_path) as paid_edge:
        yield paid_edge


@pytest.fixture
async def refunding_edge(
    database_url: str,
    db_pool: asyncpg.Pool,
    relay_url: str,
    lnbits_wallet: Callable[..., LnbitsWallet],
    tmp_path: Path,
) -> AsyncIterator[PaidEdge]:
    """The edge with refund links (ROUTER_EDGE_REFUNDS, here over http), payees whose wallets can pay refunds, and
    a node that accepts a loopback destination (NODE_REFUND_ALLOW_PRIVATE)."""
    async with running_edge(database_url, db_pool, relay_url, lnbits_wallet, tmp_path, refunds=True) as paid_edge:
        yield paid_edge


@asynccontextmanager
async def running_edge(
    database_url: str,
    db_pool: asyncpg.Pool,
    relay_url: str,
    lnbits_wallet: Callable[..., LnbitsWallet],
    tmp_path: Path,
    *,
    refunds: bool = False,
    client_sats: int = 1000,
) -> AsyncIterator[PaidEdge]:
    await reset_database(db_pool)
    client, node_wallet = lnbits_wallet("client", client_sats), lnbits_wallet("node")
    router_wallet = lnbits_wallet("router")
    client_backend = backend(client, admin=True)
    service = await NwcService(relay_url, client_backend).start()
    secret_file = tmp_path / "client.nwc"
    secret_file.write_text(service.uri.uri() + "\n")
    secret_file.chmod(0o600)
    entries = f"{digest(BOUND_KEY)}:{BUDGET_MSAT}:{secret_file},{NIP98_CLIENT.npub}:{BUDGET_MSAT}:{secret_file}"
    bindings = parse_wallet_bindings(entries)
    keys = {digest(BOUND_KEY): BOUND_CLIENT.pubkey, digest(UNBOUND_KEY): UNBOUND_CLIENT.pubkey}
    readers = [backend(node_wallet), backend(router_wallet)]
    node_refunds = RefundSettings(allow_private=True, dust_msat=1) if refunds else RefundSettings()
    try:
        async with running_router(
            database_url,
            node_timeout_ms=10_000,
            require_payment=True,
            wallet=router_wallet.uri(admin=refunds),
            ln_network=NETWORK,
            fee_base_msat=FEE_MSAT,
            api_keys=keys,
            api_key_wallets=bindings,
            edge_refunds=refunds,
        ) as router:
            port = free_port()
            node = NodeSettings(
                keys=Keys.generate(),
                router_pubkeys=frozenset({router.pubkey}),
                runner="mock",
                port=port,
                endpoint=f"http://127.0.0.1:{port}",
                router_endpoints=(router.url,),
                heartbeat_ms=200,
                price_input_msat=PRICE_MSAT,
                price_output_msat=PRICE_MSAT,
                require_payment=True,
                wallet=node_wallet.uri(admin=refunds),
                ln_network=NETWORK,
                db_url=database_url,
                refunds=node_refunds,
            )
            runner = ScriptedRunner()
            async with serve_app(create_app(node, runner), port=port):
                await eventually(lambda: node.keys.pubkey in router.service.registry.nodes, what="node registered")
                yield PaidEdge(router, node, runner, client_backend, *readers)
    finally:
        await service.stop()
        for wallet in (client_backend, *readers):
            await wallet.aclose()


def openai_client(edge: PaidEdge, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=edge.router.url + "/v1", api_key=key, max_retries=0, timeout=60)


async def balances(edge: PaidEdge) -> tuple[int, int, int]:
    return (
        await edge.client.balance_msat(),
        await edge.node_wallet.balance_msat(),
        await edge.router_wallet.balance_msat(),
    )


async def test_a_caller_without_a_wallet_binding_gets_402_with_the_payment_request(edge: PaidEdge) -> None:
    async with openai_client(edge, UNBOUND_KEY) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(**PARAMS)
    error = refused.value.body
    assert refused.value.status_code == 402 and isinstance(error, dict)
    assert (error["code"], error["type"], error["param"]) == ("payment_required", "payment_error", None)
    assert "fedai apikey new --nwc" in error["message"]
    event = decode_event(json.dumps(error["payment_request"]))
    request = decode_payload(event.content, PaymentRequest)
    check_payment_request(  # signed by the router, for this key's client and the quote it made for the call
        event, router=edge.router.pubkey, client=UNBOUND_CLIENT.pubkey, quote=request.quote, now=time.time()
    )
    assert {p.role: p.payee for p in request.payees} == {
        "node": edge.node.keys.pubkey,
        "router_fee": edge.router.pubkey,
    }
    assert request.total_msat == call_total_msat()
    assert edge.runner.served == 0 and await balances(edge) == (1_000_000, 0, 0)


async def test_a_key_bound_to_an_nwc_wallet_is_paid_from_it_and_served(edge: PaidEdge, db_pool: asyncpg.Pool) -> None:
    async with openai_client(edge, BOUND_KEY) as client:
        completion = await client.chat.completions.create(**PARAMS)
    assert completion.choices[0].message.content
    chain = verify_completion(completion.model_dump(), edge.router.pubkey, PARAMS)
    assert chain.node == edge.node.keys.pubkey and edge.runner.served == 1
    total = call_total_msat()
    client_msat, node_msat, router_msat = await balances(edge)
    assert (node_msat, router_msat) == (total - FEE_MSAT, FEE_MSAT)  # each payee paid into its own wallet
    fees = 1_000_000 - client_msat - total  # what the client's wallet paid on top (LNbits: none between its wallets)
    assert 0 <= fees <= 2 * MAX_FEE_MSAT
    assert await spent(db_pool, f"apikey:{digest(BOUND_KEY)}") == total + fees
    states = [r["state"] for r in await db_pool.fetch("SELECT state FROM payment_payees")]
    assert states == ["consumed", "consumed"]


async def test_a_bound_key_streams_a_paid_completion(edge: PaidEdge) -> None:
    async with openai_client(edge, BOUND_KEY) as client:
        stream = await client.chat.completions.create(**PARAMS, stream=True)
        chunks = [chunk.model_dump() async for chunk in stream]
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    last = next(c for c in reversed(chunks) if c.get("fedai"))
    assert last["fedai"]["payment"]["quote_id"]  # what the router paid from the bound wallet, checked below
    chain = verify_completion(last, edge.router.pubkey, PARAMS, output=text)
    assert text and chain.node == edge.node.keys.pubkey and edge.runner.served == 1
    assert (await balances(edge))[1] == call_total_msat() - FEE_MSAT


async def test_a_call_past_the_budget_is_refused_and_nothing_moves(edge: PaidEdge, db_pool: asyncpg.Pool) -> None:
    async with openai_client(edge, BOUND_KEY) as client:
        await client.chat.completions.create(**PARAMS)
        before = await balances(edge)
        used = await spent(db_pool, f"apikey:{digest(BOUND_KEY)}")
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(**PARAMS)
    error = refused.value.body
    assert refused.value.status_code == 402 and isinstance(error, dict)
    assert error["code"] == "payment_refused" and str(BUDGET_MSAT) in error["message"]
    assert await balances(edge) == before and edge.runner.served == 1
    assert await spent(db_pool, f"apikey:{digest(BOUND_KEY)}") == used


async def test_a_nip98_identity_bound_to_a_wallet_is_paid_from_it(edge: PaidEdge, db_pool: asyncpg.Pool) -> None:
    http = httpx.AsyncClient(auth=NostrAuth(NIP98_CLIENT))
    async with openai.AsyncOpenAI(base_url=edge.router.url + "/v1", api_key="unused", http_client=http) as client:
        completion = await client.chat.completions.create(**PARAMS)
    chain = verify_completion(completion.model_dump(), edge.router.pubkey, PARAMS)
    assert chain.request.pubkey == NIP98_CLIENT.pubkey and edge.runner.served == 1
    assert (await balances(edge))[1:] == (call_total_msat() - FEE_MSAT, FEE_MSAT)
    assert await spent(db_pool, f"client:{NIP98_CLIENT.pubkey}") >= call_total_msat()
    assert await spent(db_pool, f"apikey:{digest(BOUND_KEY)}") == 0  # each binding has its own budget


async def test_a_call_that_fails_after_it_was_paid_names_the_proof_for_a_retry(edge: PaidEdge) -> None:
    """Nothing paid is lost: the node fails after the router paid from the bound wallet, the claims are given
    back, the error names the payment, and the client (holding the key the API key acts as) is served with it."""
    edge.runner.fail_next = 10  # every attempt of this call fails
    async with openai_client(edge, BOUND_KEY) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            await client.chat.completions.create(**PARAMS)
    error = failed.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_error"
    paid = msgspec.convert(error["payment"], PaidCall)
    paid_before = await balances(edge)
    edge.runner.fail_next = 0
    async with AsyncClient(edge.router.url, BOUND_CLIENT, router_pubkey=edge.router.pubkey) as fedai:
        chain = await retry_until_served(fedai, paid)
    assert chain.node == edge.node.keys.pubkey and edge.runner.served == 1
    assert await balances(edge) == paid_before  # served with what was paid, nothing paid twice


async def retry_until_served(fedai: AsyncClient, paid: PaidCall) -> VerifiedChain:
    """The same proof through /infer, while the failed node cools down (`no_capacity` until then)."""
    messages = PARAMS["messages"]
    for _ in range(100):
        try:
            return await fedai.infer(
                MODEL, messages=messages, max_tokens=MAX_TOKENS, quote_id=paid.quote_id, payment=paid.proof
            )
        except RouterError as err:
            if err.code != ErrorCode.NO_CAPACITY:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the retry was never served")


async def refunds_paid(pool: asyncpg.Pool) -> dict[str, str]:
    return {r["role"]: r["state"] for r in await pool.fetch("SELECT role, state FROM refunds")}


async def test_a_bound_key_gets_the_unused_share_back_in_its_own_wallet(
    refunding_edge: PaidEdge, db_pool: asyncpg.Pool
) -> None:
    """The call's `refund_to` is the router's refund link for it (never the bound connection's URI); the node
    refunds the unused part of its share there, which the bound wallet invoiced; the statements are checked."""
    edge = refunding_edge
    params = PARAMS | {"max_tokens": 2 * MAX_TOKENS}  # a ceiling the mock's answer does not reach (within the budget)
    async with openai_client(edge, BOUND_KEY) as client:
        completion = await client.chat.completions.create(**params)
    body = completion.model_dump()
    chain = verify_completion(body, edge.router.pubkey, params)  # the statements, checked against the proof
    refund_to = body["fedai"]["payment"]["proof"]["refund_to"]
    assert refund_to.startswith(f"{edge.router.url}/refunds/lnurlp/") and "nostr+walletconnect" not in json.dumps(body)
    node = next(s for s in chain.settlements if s.role == "node")
    assert node.used_msat == chain.record.price_msat and node.refund_msat == node.quoted_msat - node.used_msat > 0
    total = node.quoted_msat + FEE_MSAT

    async def node_refunded() -> bool:
        return await refunds_paid(db_pool) == {"node": "paid"}  # the fee (base only) refunds nothing

    await eventually_async(node_refunded, what="the node's refund paid")
    client_msat, node_msat, router_msat = await balances(edge)
    assert (node_msat, router_msat) == (node.used_msat, FEE_MSAT)
    assert client_msat == 1_000_000 - total + node.refund_msat  # LNbits charges no fee between its wallets

    async with AsyncClient(edge.router.url, BOUND_CLIENT, router_pubkey=edge.router.pubkey) as fedai:
        status = await fedai.payment_status(body["fedai"]["payment"]["proof"]["payment_request"])
    shown = {p["role"]: p["refund"] for p in status["payees"]}
    assert shown["node"]["state"] == "paid" and shown["node"]["refunded_msat"] == node.refund_msat
    assert refund_to not in json.dumps(status)


async def test_a_bound_key_streaming_gets_its_refund_and_a_link_serves_no_one_else(
    refunding_edge: PaidEdge, db_pool: asyncpg.Pool
) -> None:
    edge = refunding_edge
    params = PARAMS | {"max_tokens": 2 * MAX_TOKENS}  # a ceiling the mock's stream does not reach (within the budget)
    async with openai_client(edge, BOUND_KEY) as client:
        stream = await client.chat.completions.create(**params, stream=True)
        chunks = [chunk.model_dump() async for chunk in stream]
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    last = next(c for c in reversed(chunks) if c.get("fedai"))
    chain = verify_completion(last, edge.router.pubkey, params, output=text)
    node = next(s for s in chain.settlements if s.role == "node")
    assert node.refund_msat > 0

    async def node_refunded() -> bool:
        return await refunds_paid(db_pool) == {"node": "paid"}

    await eventually_async(node_refunded, what="the stream's node refund paid")
    link = last["fedai"]["payment"]["proof"]["refund_to"]
    async with httpx.AsyncClient() as http:
        too_much = (await http.get(f"{link}/callback", params={"amount": node.quoted_msat + FEE_MSAT + 1})).json()
        unknown = (await http.get(f"{edge.router.url}/refunds/lnurlp/{'0' * 64}")).json()
        malformed = (await http.get(f"{link}/callback", params={"amount": "-5"})).json()
    assert too_much == {"status": "ERROR", "reason": "amount out of range"} and malformed["status"] == "ERROR"
    assert unknown == {"status": "ERROR", "reason": "no such refund link"}
    await db_pool.execute("UPDATE edge_refund_links SET invoices = $1", MAX_INVOICES)
    async with httpx.AsyncClient() as http:
        spent_link = (await http.get(f"{link}/callback", params={"amount": 1000})).json()
    assert spent_link == {"status": "ERROR", "reason": "no such refund link, or it made all its invoices"}
    request_id = last["fedai"]["payment"]["proof"]["payment_request"]
    async with AsyncClient(edge.router.url, UNBOUND_CLIENT, router_pubkey=edge.router.pubkey) as other:
        with pytest.raises(RouterError) as refused:  # another client's key never sees this payment or its refund
            await other.payment_status(request_id)
    assert refused.value.http_status == 404


async def test_a_wallet_that_runs_dry_part_way_gets_the_router_fee_back(
    database_url: str,
    db_pool: asyncpg.Pool,
    relay_url: str,
    lnbits_wallet: Callable[..., LnbitsWallet],
    tmp_path: Path,
) -> None:
    """The bound wallet holds enough for the router's fee, not for the node's share: the fee is paid first, the
    node's invoice fails, the call is refused, and the router returns its own fee to the call's refund link;
    nothing is left with anyone for a call no one served."""
    funds_msat = 2 * FEE_MSAT  # the fee, not the node's share (every share here is at least MAX_TOKENS sat)
    async with running_edge(
        database_url, db_pool, relay_url, lnbits_wallet, tmp_path, refunds=True, client_sats=funds_msat // 1000
    ) as edge:
        async with openai_client(edge, BOUND_KEY) as client:
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(**PARAMS)
        assert refused.value.status_code in (402, 503) and edge.runner.served == 0

        async def fee_returned() -> bool:
            return await refunds_paid(db_pool) == {"router_fee": "paid"}

        await eventually_async(fee_returned, what="the router's fee refunded")
        assert await balances(edge) == (funds_msat, 0, 0)
        stated = await db_pool.fetchrow("SELECT role, used_msat, refund_msat FROM payment_settlements")
        assert stated is not None and tuple(stated) == ("router_fee", 0, FEE_MSAT)
