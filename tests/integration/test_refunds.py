"""Refunds of the unused part of a share, paid from the payee's own (LNbits) wallet to the client's destination:
an NWC wallet service or an LNURL-pay server on loopback reached through the router's guarded outbound session.
A failing destination is recorded and retried, a retry pays the same invoice, concurrent workers pay once, and
a payment made before a crash is answered, not made again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Counter

from fedai.lnbits import LnbitsWallet
from fedai.payments.backends.lnbits import open_lnbits
from fedai.payments.destination import DestinationInvoices
from fedai.payments.refund import settle_share
from fedai.payments.spec import parse_spec
from fedai.payments.wallet import Wallet
from fedai.protocol.messages import Settlement
from fedai.refunder import Refunder, RefundPolicy
from fedai.store.refunds import RefundStore
from fedai_router.outbound import Outbound
from fedai_router.refunds import outbound_fetch
from fedai_router.resolver import BoundedResolver
from tests.support.lnurl import LnurlService
from tests.support.nwc_service import NwcService
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

NETWORK = "bitcoin"
DUST_MSAT = 1_000
MAX_FEE_MSAT = 50_000  # above LNbits' fee reserve, max(2 sat, 1 %)


async def open_outbound(allow_private: bool) -> Outbound:
    failures = Counter("failures", "", ["target", "reason"], registry=CollectorRegistry())
    outbound = Outbound(BoundedResolver(2, 5.0), failures, allow_private=allow_private)
    await outbound.start()
    return outbound


class Party:
    """The payee that refunds (its funded LNbits wallet) and the client that receives (its own wallet)."""

    def __init__(self, payer: Wallet, client: Wallet, outbound: Outbound) -> None:
        self.payer = payer
        self.client = client
        self.outbound = outbound

    def invoices(self) -> DestinationInvoices:
        return DestinationInvoices(outbound_fetch(self.outbound), network=NETWORK, allow_http=True)

    def refunder(self, pool: asyncpg.Pool, worker: str = "w1", wallet: Wallet | None = None) -> Refunder:
        policy = RefundPolicy(max_fee_msat=MAX_FEE_MSAT, allow_http=True)
        payer = wallet or self.payer
        return Refunder(RefundStore(pool), payer, self.invoices(), role="node", worker=worker, policy=policy)


@pytest.fixture
async def party(lnbits_wallet: Callable[..., LnbitsWallet]) -> AsyncIterator[Party]:
    payer = open_lnbits(parse_spec(lnbits_wallet("payee", 100).uri()))
    client = open_lnbits(parse_spec(lnbits_wallet("client").uri()))
    outbound = await open_outbound(allow_private=True)
    yield Party(payer, client, outbound)
    await outbound.close()
    await payer.aclose()
    await client.aclose()


@pytest.fixture
async def lnurl(party: Party) -> AsyncIterator[LnurlService]:
    service = LnurlService(party.client)
    async with serve_app(service.app()) as url:
        service.base_url = url
        yield service


def share(payment_hash: str, quoted_msat: int, used_msat: int) -> Settlement:
    return settle_share("node", payment_hash, quoted_msat, used_msat, DUST_MSAT, refunding=True)


def address(service: LnurlService) -> str:
    return f"client@{service.base_url.removeprefix('http://')}"


async def test_the_refund_is_the_quoted_share_less_the_metered_one_over_nwc(
    db_pool: asyncpg.Pool, party: Party, relay_url: str, lnbits_wallet: Callable[..., LnbitsWallet]
) -> None:
    receiving = open_lnbits(parse_spec(lnbits_wallet("client-nwc").uri()))
    service = await NwcService(relay_url, receiving).start()
    try:
        refunder = party.refunder(db_pool)
        payment_hash = secrets.token_hex(32)
        settlement = settle_share("node", payment_hash, 21_000, 8_000, DUST_MSAT, refunding=True)
        assert (settlement.refund_msat, settlement.kept_msat) == (13_000, 0)
        assert await refunder.open(settlement, service.uri.uri())

        outcome = await refunder.attempt(payment_hash)
        assert outcome == "paid", await refunder.store.status(payment_hash)

        assert await receiving.balance_msat() == 13_000
        status = await refunder.store.status(payment_hash)
        assert status is not None and (status.state, status.amount_msat, status.attempts) == ("paid", 13_000, 1)
        assert await refunder.attempt(payment_hash) == "busy"  # settled: never again
        assert await receiving.balance_msat() == 13_000
    finally:
        await service.stop()
        await receiving.aclose()


async def test_dust_is_kept_and_stated_and_opens_no_refund(db_pool: asyncpg.Pool, party: Party) -> None:
    payment_hash = secrets.token_hex(32)
    settlement = settle_share("node", payment_hash, 21_000, 20_200, DUST_MSAT, refunding=True)
    assert (settlement.used_msat, settlement.refund_msat, settlement.kept_msat) == (20_200, 0, 800)
    assert not await party.refunder(db_pool).open(settlement, "client@example.invalid")
    assert await RefundStore(db_pool).status(payment_hash) is None


async def test_a_failing_destination_is_recorded_retried_and_paid_once(
    db_pool: asyncpg.Pool, party: Party, lnurl: LnurlService
) -> None:
    refunder = party.refunder(db_pool)
    payment_hash = secrets.token_hex(32)
    assert await refunder.open(share(payment_hash, 30_000, 10_000), address(lnurl))
    lnurl.failing = True

    assert await refunder.attempt(payment_hash) == "retry"
    status = await refunder.store.status(payment_hash)
    assert status is not None and (status.state, status.attempts) == ("pending", 1)
    assert status.last_error == "destination: unreachable" and "127.0.0.1" not in status.last_error
    assert await party.client.balance_msat() == 0

    lnurl.failing = False
    assert await refunder.retry_due(backoff_s=0) == {"paid": 1}
    assert await refunder.retry_due(backoff_s=0) == {}
    assert await party.client.balance_msat() == 20_000
    assert len(lnurl.invoices_made) == 1


async def test_a_retry_pays_the_same_invoice_and_a_payment_before_a_crash_is_not_made_again(
    db_pool: asyncpg.Pool, party: Party, lnurl: LnurlService, lnbits_wallet: Callable[..., LnbitsWallet]
) -> None:
    broke = open_lnbits(parse_spec(lnbits_wallet("broke").uri()))  # the payee's wallet before it is funded
    store = RefundStore(db_pool)
    poor = party.refunder(db_pool, wallet=broke)
    payment_hash = secrets.token_hex(32)
    assert await poor.open(share(payment_hash, 30_000, 25_000), address(lnurl))
    assert await poor.attempt(payment_hash) == "retry"  # the invoice was fixed, paying it was refused
    status = await store.status(payment_hash)
    assert status is not None and status.last_error == "wallet refused: insufficient_balance"
    invoice: Any = await db_pool.fetchval("SELECT invoice FROM refunds WHERE payment_hash = $1", payment_hash)
    assert invoice == lnurl.invoices_made[0]

    # the funded wallet pays that invoice, then "crashes" before recording it; the retry answers that payment
    key: Any = await db_pool.fetchval("SELECT idempotency_key FROM refunds WHERE payment_hash = $1", payment_hash)
    await party.payer.pay_invoice(invoice, MAX_FEE_MSAT, key)
    assert await party.refunder(db_pool).attempt(payment_hash) == "paid"
    assert await party.client.balance_msat() == 5_000
    assert len(lnurl.invoices_made) == 1
    await broke.aclose()


async def test_concurrent_workers_pay_a_refund_once(db_pool: asyncpg.Pool, party: Party, lnurl: LnurlService) -> None:
    workers = [party.refunder(db_pool, f"w{i}") for i in range(4)]
    payment_hash = secrets.token_hex(32)
    assert await workers[0].open(share(payment_hash, 50_000, 10_000), address(lnurl))

    outcomes = await asyncio.gather(*(w.attempt(payment_hash) for w in workers))

    assert sorted(outcomes) == ["busy", "busy", "busy", "paid"]
    assert await party.client.balance_msat() == 40_000
    assert len(lnurl.invoices_made) == 1


async def test_the_guarded_session_refuses_a_private_destination_and_gives_up_after_its_attempts(
    db_pool: asyncpg.Pool, party: Party, lnurl: LnurlService
) -> None:
    guarded = await open_outbound(allow_private=False)
    try:
        invoices = DestinationInvoices(outbound_fetch(guarded), network=NETWORK, allow_http=True)
        policy = RefundPolicy(max_fee_msat=MAX_FEE_MSAT, max_attempts=2, allow_http=True)
        refunder = Refunder(RefundStore(db_pool), party.payer, invoices, role="router_fee", worker="w", policy=policy)
        payment_hash = secrets.token_hex(32)
        assert await refunder.open(share(payment_hash, 9_000, 1_000), address(lnurl))
        assert [await refunder.attempt(payment_hash) for _ in range(3)] == ["retry", "failed", "busy"]
        status = await refunder.store.status(payment_hash)
        assert status is not None and (status.state, status.attempts) == ("failed", 2)
        assert lnurl.invoices_made == []  # the loopback server was never reached
    finally:
        await guarded.close()
