"""Retention of the payment tables against real PostgreSQL (docs/payments.md#retention): payment requests (with
their payees), refunds and the node's claims go once past their retention; recent, unexpired, held and
refund-pending ones stay; each side prunes only its own refunds; batches are bounded; a pruned payment hash
presented again is still refused, by the router's store, its `/infer` and the node's claims."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import PaymentRequest, decode_payload
from fedai.protocol.payment import ClaimOutcome
from fedai.sdk import AsyncClient, RouterError
from fedai_node.payment_claims import NodeClaim, NodeClaims
from fedai_node.payment_retention import PaymentPruner
from fedai_router.config import Retention
from fedai_router.store import retention as rules
from fedai_router.store.payments import PaymentStore
from tests.support.paid_network import MODEL, NETWORK, paid_network
from tests.support.payments import Paid
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually_async

pytestmark = pytest.mark.integration

HOUR = 3_600
RETENTION = Retention(interval_s=3600, payments_s=HOUR)  # the scheduled run never fires: the tests call it


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url, retention=RETENTION) as r:
        yield r


async def issued(store: PaymentStore, expired_s_ago: float) -> Paid:
    """A payment request recorded by the router, whose expiry is `expired_s_ago` in the past (negative: ahead)."""
    paid = Paid(expires_at=int(time.time() - expired_s_ago))
    await store.record(paid.request, decode_payload(paid.request.content, PaymentRequest))
    return paid


async def claimed(store: PaymentStore, paid: Paid, *, consume: bool) -> str:
    """Claimed (and consumed) while the request was still valid; returns the claimant."""
    claimant = secrets.token_hex(16)
    claim = await store.claim_all(
        list(paid.preimages),
        paid.request.id,
        claimant,
        paid.expires_at - 10,
        client=paid.client.pubkey,
        quote=paid.quote_id,
    )
    assert claim.outcome is ClaimOutcome.CLAIMED
    if consume:
        assert await store.consume(paid.request.id, claimant) == 2
    return claimant


async def refund(pool: asyncpg.Pool, payment_hash: str, role: str, state: str, age_s: float) -> None:
    holder = "worker" if state == "paying" else None  # a worker holds a refund while paying it
    await pool.execute(
        "INSERT INTO refunds (payment_hash, role, amount_msat, destination, idempotency_key, state, claimed_by,"
        " claimed_at, updated_at) VALUES ($1, $2, 100, 'me@example.com', $3, $4, $6,"
        " CASE WHEN $6::text IS NULL THEN NULL ELSE now() END, now() - make_interval(secs => $5))",
        payment_hash,
        role,
        secrets.token_hex(16),
        state,
        age_s,
        holder,
    )


async def rows(pool: asyncpg.Pool, paid: Paid) -> tuple[int, int]:
    """(payment_requests, payment_payees) rows of `paid`'s request."""
    request_id = paid.request.id
    requests = await pool.fetchval("SELECT count(*) FROM payment_requests WHERE id = $1", request_id)
    payees = await pool.fetchval("SELECT count(*) FROM payment_payees WHERE request_id = $1", request_id)
    return requests, payees


async def stated(pool: asyncpg.Pool, paid: Paid, age_s: float) -> None:
    """A statement of each payee of `paid`, written `age_s` ago (as a paid answer writes them)."""
    for payment_hash in paid.preimages:
        await pool.execute(
            "INSERT INTO payment_settlements (payment_hash, role, quoted_msat, used_msat, refund_msat, kept_msat,"
            " created_at) VALUES ($1, 'node', 10, 4, 6, 0, now() - make_interval(secs => $2))",
            payment_hash,
            float(age_s),
        )


async def statements(pool: asyncpg.Pool, paid: Paid) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM payment_settlements WHERE payment_hash = ANY($1::text[])", list(paid.preimages)
        )
    )


async def refund_states(pool: asyncpg.Pool) -> set[tuple[str, str]]:
    return {(r["role"], r["state"]) for r in await pool.fetch("SELECT role, state FROM refunds")}


async def test_the_router_prunes_old_requests_with_their_payees_and_keeps_what_is_still_needed(
    router: RunningRouter, db_pool: asyncpg.Pool
) -> None:
    store = PaymentStore(db_pool)
    served = await issued(store, 2 * HOUR)
    await claimed(store, served, consume=True)
    never_paid = await issued(store, 2 * HOUR)
    held = await issued(store, 2 * HOUR)  # claimed by a request in flight (or a dead replica's, until released)
    await claimed(store, held, consume=False)
    refunding = await issued(store, 2 * HOUR)  # served, its fee's refund not paid yet
    await claimed(store, refunding, consume=True)
    await refund(db_pool, list(refunding.preimages)[1], "router_fee", "pending", 2 * HOUR)
    recent = await issued(store, HOUR / 2)  # expired, but within the retention
    live = await issued(store, -600)
    await refund(db_pool, secrets.token_hex(32), "router_fee", "paid", 2 * HOUR)  # settled long ago: goes
    await refund(db_pool, secrets.token_hex(32), "router_fee", "failed", 2 * HOUR)  # given up long ago: goes
    await refund(db_pool, secrets.token_hex(32), "router_fee", "paid", HOUR / 2)  # recent: stays
    await refund(db_pool, secrets.token_hex(32), "node", "paid", 2 * HOUR)  # a node's on a shared database: its own
    for answered in (served, refunding):  # statements of paid answers: they go with their payees
        await stated(db_pool, answered, 2 * HOUR)
    link = secrets.token_hex(32)  # an OpenAI edge refund link names its request: it must not keep it (0020)
    await db_pool.execute(
        "INSERT INTO edge_refund_links (token, request_id, binding, max_msat) VALUES ($1, $2, 'apikey:x', 1000)",
        link,
        served.request.id,
    )

    counts = await router.service.housekeeper.run()

    assert counts["payment_requests"] == 2 and counts["refunds"] == 2
    assert await rows(db_pool, served) == (0, 0) and await rows(db_pool, never_paid) == (0, 0)
    for kept in (held, refunding, recent, live):
        assert await rows(db_pool, kept) == (1, 2)
    assert await refund_states(db_pool) == {("router_fee", "pending"), ("router_fee", "paid"), ("node", "paid")}
    assert counts["payment_settlements"] == 2  # the served request's; the refunding one's payees are still here
    assert await statements(db_pool, served) == 0 and await statements(db_pool, refunding) == 2
    assert await db_pool.fetchval("SELECT count(*) FROM edge_refund_links WHERE token = $1", link) == 0
    # the forgotten hashes are refused like any unknown one: a proof of them serves nothing
    for paid in (served, never_paid):
        again = await store.claim_all(
            list(paid.preimages),
            paid.request.id,
            secrets.token_hex(16),
            time.time(),
            client=paid.client.pubkey,
            quote=paid.quote_id,
        )
        assert again.outcome is ClaimOutcome.UNKNOWN
    assert (await router.service.housekeeper.run())["payment_requests"] == 0  # nothing more to do


async def test_a_zero_retention_keeps_the_payment_rows(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, retention=Retention(interval_s=3600, payments_s=0)) as r:
        old = await issued(PaymentStore(db_pool), 400 * 86_400)
        counts = await r.service.housekeeper.run()
    assert "payment_requests" not in counts and "refunds" not in counts
    assert await rows(db_pool, old) == (1, 2)


async def test_router_batches_are_bounded_and_concurrent_pruners_split_the_rows(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    store = PaymentStore(db_pool)
    for _ in range(7):
        await issued(store, 2 * HOUR)
    rule = rules.RULES["payment_requests"]
    assert await rules.prune(db_pool, rule, HOUR, batch=2, max_batches=1) == 2  # the rest waits for the next run
    together = await asyncio.gather(*(rules.prune(db_pool, rule, HOUR, batch=1, max_batches=10) for _ in range(3)))
    assert sum(together) == 5
    assert await db_pool.fetchval("SELECT count(*) FROM payment_payees") == 0


async def node_claim(claims: NodeClaims, expired_s_ago: float, state: str) -> NodeClaim:
    """A claim of the node's, made while its request was valid, left `claimed`, `consumed` or `released`."""
    expires_at = time.time() - expired_s_ago
    claim = NodeClaim(secrets.token_hex(32), secrets.token_hex(32), "r" * 64, "c" * 64, 7_000, expires_at)
    claimant = secrets.token_hex(32)
    assert await claims.claim(claim, claimant, expires_at - 10) is ClaimOutcome.CLAIMED
    if state == "consumed":
        assert await claims.consume(claim.payment_hash, claimant)
    elif state == "released":
        assert await claims.release(claim.payment_hash, claimant)
    return claim


async def node_hashes(pool: asyncpg.Pool) -> set[str]:
    return {r["payment_hash"] for r in await pool.fetch("SELECT payment_hash FROM payment_claims")}


async def test_the_node_prunes_its_old_claims_and_refunds_and_a_pruned_hash_stays_refused(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    consumed = await node_claim(claims, 2 * HOUR, "consumed")
    released = await node_claim(claims, 2 * HOUR, "released")
    held = await node_claim(claims, 2 * HOUR, "claimed")
    refunding = await node_claim(claims, 2 * HOUR, "consumed")
    await refund(db_pool, refunding.payment_hash, "node", "paying", 2 * HOUR)
    recent = await node_claim(claims, HOUR / 2, "consumed")
    live = await node_claim(claims, -600, "consumed")
    await refund(db_pool, secrets.token_hex(32), "node", "paid", 2 * HOUR)  # goes
    await refund(db_pool, secrets.token_hex(32), "router_fee", "paid", 2 * HOUR)  # the router's: stays

    counts = await PaymentPruner(db_pool, HOUR).run()

    assert counts == {"payment_claims": 2, "refunds": 1}
    kept = {c.payment_hash for c in (held, refunding, recent, live)}
    assert await node_hashes(db_pool) == kept
    assert await refund_states(db_pool) == {("node", "paying"), ("router_fee", "paid")}
    for pruned in (consumed, released):  # presented again: its payment request expired, so it is never claimed
        assert await claims.claim(pruned, secrets.token_hex(32), time.time()) is ClaimOutcome.EXPIRED
    assert await node_hashes(db_pool) == kept
    assert await PaymentPruner(db_pool, 0).run() == {}  # 0: kept for good


async def test_the_node_pruner_runs_on_its_own(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    await node_claim(claims, 2 * HOUR, "consumed")
    task = asyncio.create_task(PaymentPruner(db_pool, HOUR).loop(interval_s=0.05))
    try:
        await eventually_async(lambda: _empty(db_pool), what="old claim pruned", every=0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM payment_claims") == 0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("retention-tls"))


async def test_a_served_proof_presented_after_pruning_is_refused_end_to_end(
    database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path
) -> None:
    async with (
        paid_network(database_url, db_pool, tls, tmp_path, retention=RETENTION) as net,
        AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as client,
    ):
        quote = await client.quote(MODEL, max_tokens=16, prompt="2+2?")
        proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
        await client.infer(MODEL, "2+2?", max_tokens=16, quote_id=quote.quote.quote_id, payment=proof)
        # time passes: the request expired more than the retention ago, on the router and on the node
        for table, column in (("payment_requests", "id"), ("payment_payees", "request_id")):
            await db_pool.execute(
                f"UPDATE {table} SET expires_at = now() - interval '2 hours' WHERE {column} = $1",  # noqa: S608
                proof.payment_request,
            )
        await db_pool.execute("UPDATE payment_claims SET expires_at = now() - interval '2 hours'")
        assert (await net.router.service.housekeeper.run())["payment_requests"] == 1
        assert (await PaymentPruner(db_pool, HOUR).run())["payment_claims"] == 1
        with pytest.raises(RouterError) as refused:
            await client.infer(MODEL, "2+2?", max_tokens=16, quote_id=quote.quote.quote_id, payment=proof)
    assert refused.value.code == ErrorCode.PAYMENT_INVALID
    assert net.runner.served == 1
