"""`fedai infer --pay` with every party's wallet in a real LNbits (FakeWallet: real BOLT11 invoices, real
preimages, wallets of one instance paying each other): the client pays from its own LNbits wallet through an
`lnbits+http://` URI, the node's share lands in the node's wallet and the fee in the router's, and `fedai
earnings` states exactly what each wallet received. Prices are whole sats: LNbits invoices in sats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.lnbits import LnbitsWallet
from fedai.payments.config import open_wallet
from fedai.protocol.keys import Keys
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from fedai_node.runners.mock import MOCK_MODEL_ID, MockRunner
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

FEE_MSAT = 2_000
MSAT_PER_TOKEN = 1_000  # a price per 1k tokens of 1_000_000 msat: every share a whole number of sats


@dataclass
class LnbitsNetwork:
    router: RunningRouter
    client: LnbitsWallet
    node: LnbitsWallet
    fee: LnbitsWallet


@pytest.fixture
async def net(
    database_url: str, db_pool: asyncpg.Pool, lnbits_wallet: Callable[..., LnbitsWallet]
) -> AsyncIterator[LnbitsNetwork]:
    await reset_database(db_pool)
    client, node_wallet, fee_wallet = lnbits_wallet("client", 100), lnbits_wallet("node"), lnbits_wallet("router")
    async with AsyncExitStack() as stack:
        router = await stack.enter_async_context(
            running_router(
                database_url, require_payment=True, wallet=fee_wallet.uri(admin=False), fee_base_msat=FEE_MSAT
            )
        )
        port = free_port()
        node = NodeSettings(
            keys=Keys.generate(),
            router_pubkeys=frozenset({router.pubkey}),
            runner="mock",
            port=port,
            endpoint=f"http://127.0.0.1:{port}",
            router_endpoints=(router.url,),
            heartbeat_ms=200,
            price_input_msat=MSAT_PER_TOKEN * 1000,
            price_output_msat=MSAT_PER_TOKEN * 1000,
            require_payment=True,
            wallet=node_wallet.uri(admin=False),
            db_url=database_url,
        )
        await stack.enter_async_context(serve_app(create_app(node, MockRunner(MOCK_MODEL_ID, 4096)), port=port))
        await eventually(lambda: node.keys.pubkey in router.service.registry.nodes, what="node registered")
        yield LnbitsNetwork(router, client, node_wallet, fee_wallet)


async def balance(wallet: LnbitsWallet) -> int:
    opened = open_wallet(wallet.uri(admin=False), "test")
    try:
        return await opened.balance_msat()
    finally:
        await opened.aclose()


async def fedai(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(CliRunner(env={"COLUMNS": "80"}).invoke, cli, list(args))
    return result.exit_code, result.stdout, result.stderr


async def test_infer_pay_from_an_lnbits_wallet_pays_each_payees_own_wallet(
    net: LnbitsNetwork, database_url: str
) -> None:
    r = net.router
    args = ["--router", r.url, "--router-pubkey", r.pubkey, "--key", Keys.generate().nsec, "-m", MOCK_MODEL_ID]
    wallet = ["--wallet", net.client.uri(), "--max-tokens", "8"]
    code, out, err = await fedai("infer", *args, *wallet, "--pay", "--yes", "--json", "What is 2+2?")
    assert code == 0, err
    shares = {p["role"]: p["amount_msat"] for p in json.loads(out)["payment"]["payees"]}
    assert shares["router_fee"] == FEE_MSAT and shares["node"] > 0 and shares["node"] % 1000 == 0
    assert await balance(net.node) == shares["node"] and await balance(net.fee) == FEE_MSAT
    code, out, err = await fedai("earnings", "--role", "router", "--database-url", database_url, "--json")
    assert code == 0, err
    assert json.loads(out)["total_msat"] == {"node": shares["node"], "router_fee": FEE_MSAT}
