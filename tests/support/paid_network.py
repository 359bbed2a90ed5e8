"""A paying router and a paying node on loopback, each with its own wallet, and a client with its own, for the
flow tests (docs/payments.md#the-flow).

TEST-ONLY WALLETS: every wallet is the real LND backend (`lnd+https://…`) talking to tests/support/fake_lnd.py,
a server answering LND's documented REST shapes over one in-memory ledger (tests/support/lightning.py) whose
nodes sign real BOLT11 invoices (regtest) and reveal real preimages. Balances live in that ledger, so a test
sees who was paid what. This is not a Lightning network: it stands in for one in tests only.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
from starlette.applications import Starlette

from fedai.protocol.keys import Keys
from fedai.protocol.messages import InferenceRequest
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from fedai_node.refund_settings import RefundSettings
from fedai_node.runners.base import RunnerError, RunnerResult, StreamItem
from fedai_node.runners.mock import MOCK_MODEL_ID, MockRunner
from tests.support.fake_lnd import Lnd, running_lnd
from tests.support.lightning import Ledger
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import free_port, serve_app
from tests.support.tls import SelfSigned
from tests.support.wait import eventually

MODEL = MOCK_MODEL_ID
NETWORK = "regtest"  # the ledger's invoices are lnbcrt…
ROUTER_FEE_MSAT = 500  # ROUTER_FEE_BASE_MSAT
CLIENT_BALANCE_MSAT = 10_000_000
NODE_DUST_MSAT = 100  # NODE_REFUND_DUST_MSAT
WALLET_TIMEOUT_S = "2"  # each wallet call's bound (the backends' `timeout`): a slow wallet fails fast in tests


class ScriptedRunner(MockRunner):
    """The mock runner, failing the next `fail_next` requests (a node that fails after it was paid) before any
    output, or the next `break_next` after their first delta. `/infer` drains the same stream, so both count.
    `input_factor` stands for a model whose tokenizer counts that many times the router's estimate of a prompt."""

    def __init__(self) -> None:
        super().__init__(MOCK_MODEL_ID, 4096)
        self.fail_next = 0
        self.break_next = 0
        self.served = 0
        self.input_factor = 1

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        if self.fail_next:
            self.fail_next -= 1
            raise RunnerError("scripted failure")
        breaking, self.break_next = self.break_next > 0, max(0, self.break_next - 1)
        async for item in super().stream(req):
            if isinstance(item, RunnerResult):
                self.served += 1
                item = replace(item, input_tokens=item.input_tokens * self.input_factor)
            yield item
            if breaking:
                raise RunnerError("scripted failure mid-stream")


@dataclass
class PaidNetwork:
    router: RunningRouter
    node: NodeSettings
    runner: ScriptedRunner
    ledger: Ledger
    client_wallet: Lnd
    node_wallet: Lnd
    router_wallet: Lnd
    node_app: Starlette | None = None  # the node's app (`state.node`: its parts)

    def balance(self, party: str) -> int:
        return self.ledger.nodes[party].balance_msat


@asynccontextmanager
async def paid_network(
    database_url: str,
    pool: asyncpg.Pool,
    tls: SelfSigned,
    tmp: Path,
    node_refunds: RefundSettings | None = None,
    **router_settings: Any,
) -> AsyncIterator[PaidNetwork]:
    """Router (ROUTER_REQUIRE_PAYMENT, a fee, its own wallet) and node (NODE_REQUIRE_PAYMENT, its own wallet);
    `router_settings` override the router's, `node_refunds` the node's refund settings. Refund destinations on
    loopback are allowed (NODE_REFUND_ALLOW_PRIVATE)."""
    await reset_database(pool)
    ledger = Ledger()
    ledger.add_node("client", balance_msat=CLIENT_BALANCE_MSAT)
    ledger.add_node("node", balance_msat=0)
    ledger.add_node("router", balance_msat=0)
    async with AsyncExitStack() as stack:
        wallets = [
            await stack.enter_async_context(running_lnd(ledger, n, tls, tmp, timeout=WALLET_TIMEOUT_S))
            for n in ("client", "node", "router")
        ]
        router = await stack.enter_async_context(
            running_router(
                database_url,
                node_timeout_ms=5_000,
                require_payment=True,
                wallet=wallets[2].spec,
                ln_network=NETWORK,
                **({"fee_base_msat": ROUTER_FEE_MSAT} | router_settings),
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
            price_input_msat=100_000,  # msat per 1k tokens: a few thousand msat per request
            price_output_msat=200_000,
            require_payment=True,
            wallet=wallets[1].spec,
            ln_network=NETWORK,
            db_url=database_url,
            refunds=node_refunds or RefundSettings(dust_msat=NODE_DUST_MSAT, allow_private=True),
        )
        runner = ScriptedRunner()
        app = create_app(node, runner)
        await stack.enter_async_context(serve_app(app, port=port))
        await eventually(lambda: node.keys.pubkey in router.service.registry.nodes, what="node registered")
        yield PaidNetwork(router, node, runner, ledger, wallets[0], wallets[1], wallets[2], app)


__all__ = ["MODEL", "NETWORK", "ROUTER_FEE_MSAT", "PaidNetwork", "ScriptedRunner", "paid_network"]
