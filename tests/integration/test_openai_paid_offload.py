"""A paid offload at the OpenAI edge (docs/payments.md#federation-settlement), driven by the official `openai`
package: requester A (a paying router with no node, refund links on) serves a model only provider B serves. An
API key bound to the client's own wallet (NWC, the wallet service answering from the client's test wallet) pays
B's invoice and A's fee for a quote priced by B's winning bid; B runs the job and signs a receipt stating its
settlement, refunds its unused share to the call's refund link (which the bound wallet invoices), and the chain
verifies with `fedai.sdk.openai.verify_completion`. A stream for such a model is refused before anything is paid.

TEST-ONLY WALLETS: the real LND backend against tests/support/fake_lnd.py (one in-memory ledger signing real
regtest BOLT11 invoices), as in test_paid_offload.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest

from fedai.protocol.keys import Keys
from fedai_router.client_wallets import parse_wallet_bindings
from fedai_router.settlement_settings import SettlementSettings
from tests.support.database import extra_database
from tests.support.fake_lnd import running_lnd
from tests.support.federation import MODEL, Duo, duo
from tests.support.lightning import Ledger
from tests.support.nwc_service import NwcService
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

NETWORK = "regtest"
FEE_MSAT = 500
CLIENT_BALANCE_MSAT = 1_000_000
BUDGET_MSAT = 200_000
BOUND_KEY = "fk-offload-0123456789abcdef"
CLIENT = Keys.generate()
PARAMS: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hello federation"}],
    "max_tokens": 1024,  # a ceiling far above what the scripted node writes: most of B's bid is unused
    "temperature": 0.5,  # the quote binds the whole job, sampling options included
}


@pytest.fixture(scope="module")
async def b_database(database_url: str) -> AsyncIterator[str]:
    async with extra_database(database_url, "offedge_b") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("offedge-tls"))


@dataclass
class Edge:
    pair: Duo
    ledger: Ledger

    def balance(self, name: str) -> int:
        return self.ledger.nodes[name].balance_msat

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.pair.a.url + "/v1", api_key=BOUND_KEY, max_retries=0, timeout=60)


@pytest.fixture
async def edge(
    database_url: str, db_pool: asyncpg.Pool, b_database: str, tls: SelfSigned, tmp_path: Path, relay_url: str
) -> AsyncIterator[Edge]:
    ledger = Ledger()
    for name in ("client", "requester", "provider"):
        ledger.add_node(name, balance_msat=CLIENT_BALANCE_MSAT if name == "client" else 0)
    ledger.fee_base_msat = 0  # routing fees are the payer's: B refunds from exactly what it was paid
    async with (
        running_lnd(ledger, "client", tls, tmp_path) as client,
        running_lnd(ledger, "requester", tls, tmp_path) as a_wallet,
        running_lnd(ledger, "provider", tls, tmp_path) as b_wallet,
    ):
        service = await NwcService(relay_url, client.wallet).start()
        try:
            secret_file = tmp_path / "client.nwc"
            secret_file.write_text(json.dumps({"uri": service.uri.uri(), "network": NETWORK}))
            secret_file.chmod(0o600)
            digest = hashlib.sha256(BOUND_KEY.encode()).hexdigest()
            a_options = {
                "require_payment": True,
                "wallet": a_wallet.spec,
                "ln_network": NETWORK,
                "auction_ttl_ms": 2500,
                "fee_base_msat": FEE_MSAT,
                "fee_ppm": 0,
                "api_keys": {digest: CLIENT.pubkey},
                "api_key_wallets": parse_wallet_bindings(f"{digest}:{BUDGET_MSAT}:{secret_file}"),
                "edge_refunds": True,
            }
            b_options = {
                "require_payment": True,
                "wallet": b_wallet.spec,
                "ln_network": NETWORK,
                "settlement": SettlementSettings(refund_dust_msat=1),
            }
            async with duo(database_url, db_pool, b_database, a_options=a_options, b_options=b_options) as pair:
                yield Edge(pair, ledger)
        finally:
            await service.stop()


async def test_a_bound_key_pays_a_peer_routers_work_and_gets_the_unused_share_back(edge: Edge) -> None:
    from fedai.sdk.openai import verify_completion

    a, b, node = edge.pair.a, edge.pair.b, edge.pair.node
    async with edge.openai() as client:
        completion = await client.chat.completions.create(**PARAMS)
    body = completion.model_dump()
    chain = verify_completion(body, a.pubkey, PARAMS)  # the offloaded chain, the payment and both statements
    assert chain.provider == b.pubkey and chain.receipt is not None and node.calls == 1
    assert body["choices"][0]["message"]["content"] == chain.output
    refund_to = body["fedai"]["payment"]["proof"]["refund_to"]
    assert refund_to.startswith(f"{a.url}/refunds/lnurlp/")  # the call's refund link, never the NWC URI

    statements = {s.role: s for s in chain.settlements}
    provider, fee = statements["provider"], statements["router_fee"]
    assert provider.payment_hash == chain.provider_payment_hash == chain.receipt.payment_hash
    assert provider.used_msat == chain.receipt.price_msat and provider.refund_msat > 0
    assert (fee.quoted_msat, fee.used_msat, fee.refund_msat) == (FEE_MSAT, FEE_MSAT, 0)
    paid = provider.quoted_msat + FEE_MSAT

    async def refunded() -> bool:
        rows = await b.service.pool.fetch("SELECT role, state FROM refunds")
        return [(r["role"], r["state"]) for r in rows] == [("provider", "paid")]

    await eventually_async(refunded, what="B's refund paid to the call's link")
    # the client's wallet paid B and A directly, and got B's unused share back through the link
    await eventually(lambda: edge.balance("client") == CLIENT_BALANCE_MSAT - paid + provider.refund_msat)
    assert (edge.balance("provider"), edge.balance("requester")) == (provider.used_msat, FEE_MSAT)

    # another call is quoted (a new auction), paid and served on its own: one proof serves one call
    async with edge.openai() as client:
        again = await client.chat.completions.create(**PARAMS)
    assert (
        node.calls == 2
        and again.model_dump()["fedai"]["payment"]["proof"]["payment_request"]
        != (body["fedai"]["payment"]["proof"]["payment_request"])
    )


async def test_a_stream_for_a_model_only_a_peer_serves_is_refused_before_anything_is_paid(edge: Edge) -> None:
    async with edge.openai() as client:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(**PARAMS, stream=True)
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "unknown_model" and "payment" not in error
    assert edge.balance("client") == CLIENT_BALANCE_MSAT and edge.pair.node.calls == 0
