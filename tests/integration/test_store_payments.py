"""Payment claims against real PostgreSQL: a proof serves one request, however many replicas race for it; a
released claim can be taken again until its request expires; nothing is ever half-written. The router's
`payment_payees` and the node's own `payment_claims`."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from fedai.protocol.messages import PaymentRequest, decode_payload
from fedai.protocol.payment import ClaimOutcome
from fedai.store.db import create_pool
from fedai_node.payment_claims import NodeClaim, NodeClaims
from fedai_router.store.payments import PaymentStore
from tests.support.payments import NOW, Paid

ROUNDS = 20  # concurrent races per test
RACERS = 8  # claimants per race, split over two replicas' pools


@pytest.fixture
async def second_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Another replica: its own connection pool on the same database."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


ISSUED: dict[str, Paid] = {}  # request id → the paid quote, for its client and quote id


async def issued(store: PaymentStore) -> Paid:
    paid = Paid()
    await store.record(paid.request, decode_payload(paid.request.content, PaymentRequest))
    ISSUED[paid.request.id] = paid
    return paid


async def claim_all(store: PaymentStore, hashes: list[str], rid: str, claimant: str, now: float) -> ClaimOutcome:
    """The request path's claim, by the client and for the quote the request was issued to."""
    paid = ISSUED[rid]
    claim = await store.claim_all(hashes, rid, claimant, now, client=paid.client.pubkey, quote=paid.quote_id)
    assert (claim.outcome is ClaimOutcome.CLAIMED) == bool(claim.payees)
    return claim.outcome


async def claim_one(store: PaymentStore, payment_hash: str, rid: str, claimant: str, now: float) -> ClaimOutcome:
    paid = ISSUED[rid]
    claim = await store.claim(payment_hash, rid, claimant, now, client=paid.client.pubkey, quote=paid.quote_id)
    return claim.outcome


def token() -> str:
    return secrets.token_hex(16)


async def test_a_proof_serves_one_request_on_one_replica(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    hashes, rid = list(paid.preimages), paid.request.id
    first, second = token(), token()
    assert await claim_all(store, hashes, rid, first, NOW) is ClaimOutcome.CLAIMED
    assert set((await store.states(rid)).values()) == {"paid"}
    assert await claim_all(store, hashes, rid, second, NOW) is ClaimOutcome.IN_USE  # the first is in flight
    assert await store.consume(rid, second) == 0  # only the holder can consume
    assert await store.consume(rid, first) == 2
    assert set((await store.states(rid)).values()) == {"consumed"}
    assert await db_pool.fetchval("SELECT state FROM payment_requests WHERE id = $1", rid) == "consumed"
    assert await claim_all(store, hashes, rid, second, NOW) is ClaimOutcome.ALREADY_CONSUMED
    assert await claim_one(store, hashes[0], rid, first, NOW) is ClaimOutcome.ALREADY_CONSUMED  # its holder too
    assert await store.release(rid, first) == 0  # consumed is final


async def test_concurrent_claims_on_one_pool_have_one_winner(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    outcomes = await asyncio.gather(
        *(claim_all(store, list(paid.preimages), paid.request.id, token(), NOW) for _ in range(RACERS))
    )
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert set(outcomes) == {ClaimOutcome.CLAIMED, ClaimOutcome.IN_USE}


async def test_two_replicas_claiming_the_same_hashes_at_once_have_exactly_one_winner(
    db_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    replicas = [PaymentStore(db_pool), PaymentStore(second_pool)]
    for _ in range(ROUNDS):
        paid = await issued(replicas[0])
        claimants = [token() for _ in range(RACERS)]
        hashes = list(paid.preimages)
        outcomes = await asyncio.gather(
            *(claim_all(replicas[i % 2], hashes, paid.request.id, c, NOW) for i, c in enumerate(claimants))
        )
        assert outcomes.count(ClaimOutcome.CLAIMED) == 1, outcomes
        winner = claimants[outcomes.index(ClaimOutcome.CLAIMED)]
        holders = await db_pool.fetch("SELECT claimed_by FROM payment_payees WHERE request_id = $1", paid.request.id)
        assert [r["claimed_by"] for r in holders] == [winner, winner]  # both hashes, the same claimant


async def test_two_replicas_claiming_one_hash_each_way_never_split_a_request(
    db_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """One replica claims the fee hash alone while another claims both: never one hash each."""
    a, b = PaymentStore(db_pool), PaymentStore(second_pool)
    for _ in range(ROUNDS):
        paid = await issued(a)
        fee = paid.hash_of("router_fee")
        one, both = token(), token()
        await asyncio.gather(
            claim_one(a, fee, paid.request.id, one, NOW), claim_all(b, list(paid.preimages), paid.request.id, both, NOW)
        )
        rows = await db_pool.fetch(
            "SELECT payment_hash, claimed_by FROM payment_payees WHERE request_id = $1", paid.request.id
        )
        holders = {r["payment_hash"]: r["claimed_by"] for r in rows}
        assert holders in ({fee: one, paid.hash_of("node"): None}, dict.fromkeys(paid.preimages, both)), holders


async def test_release_then_reclaim_until_expiry(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    hashes, rid = list(paid.preimages), paid.request.id
    failed, retry = token(), token()
    assert await claim_all(store, hashes, rid, failed, NOW) is ClaimOutcome.CLAIMED
    assert await store.release(rid, retry) == 0  # not its claim
    assert await store.release(rid, failed) == 2
    assert set((await store.states(rid)).values()) == {"released"}
    assert await claim_all(store, hashes, rid, retry, NOW + 1) is ClaimOutcome.CLAIMED
    assert await store.release(rid, retry) == 2
    assert await claim_all(store, hashes, rid, token(), paid.expires_at) is ClaimOutcome.EXPIRED
    assert await claim_all(store, hashes, rid, token(), paid.expires_at + 3600) is ClaimOutcome.EXPIRED
    assert set((await store.states(rid)).values()) == {"released"}  # refused: nothing changed


async def test_an_expired_request_is_refused_and_expired_by_reconciliation(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    never_paid, served = await issued(store), await issued(store)
    later = never_paid.expires_at + 1
    assert await claim_all(store, list(never_paid.preimages), never_paid.request.id, token(), later) is (
        ClaimOutcome.EXPIRED
    )
    holder = token()
    assert await claim_all(store, list(served.preimages), served.request.id, holder, NOW) is ClaimOutcome.CLAIMED
    assert await store.consume(served.request.id, holder) == 2
    expired = await store.expire_unpaid(later)
    assert expired.payees >= 2 and expired.requests >= 1
    assert set((await store.states(never_paid.request.id)).values()) == {"expired"}
    assert set((await store.states(served.request.id)).values()) == {"consumed"}
    states = await db_pool.fetch(
        "SELECT id, state FROM payment_requests WHERE id = ANY($1)", [never_paid.request.id, served.request.id]
    )
    assert {r["id"]: r["state"] for r in states} == {never_paid.request.id: "expired", served.request.id: "consumed"}
    assert await claim_all(store, list(never_paid.preimages), never_paid.request.id, token(), NOW) is (
        ClaimOutcome.EXPIRED
    )


async def test_unknown_hashes_and_another_requests_hash_are_refused_whole(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    one, other = await issued(store), await issued(store)
    claimant = token()
    assert await claim_one(store, secrets.token_hex(32), one.request.id, claimant, NOW) is ClaimOutcome.UNKNOWN
    # a valid hash of another request, presented with this request's id, alone or beside this request's own
    assert await claim_one(store, other.hash_of("node"), one.request.id, claimant, NOW) is ClaimOutcome.UNKNOWN
    mixed = [one.hash_of("router_fee"), other.hash_of("node")]
    assert await claim_all(store, mixed, one.request.id, claimant, NOW) is ClaimOutcome.UNKNOWN
    assert set((await store.states(one.request.id)).values()) == {"issued"}  # nothing half-claimed
    assert set((await store.states(other.request.id)).values()) == {"issued"}


async def test_the_claim_binds_client_quote_and_every_payee(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    hashes, rid = list(paid.preimages), paid.request.id
    client, quote = paid.client.pubkey, paid.quote_id
    other_client = await store.claim_all(hashes, rid, token(), NOW, client=Paid().client.pubkey, quote=quote)
    assert other_client.outcome is ClaimOutcome.UNKNOWN
    other_quote = await store.claim_all(hashes, rid, token(), NOW, client=client, quote="another-quote")
    assert other_quote.outcome is ClaimOutcome.UNKNOWN
    # the node's preimage alone does not pay for the request: the fee's is missing
    node_only = await store.claim_all([paid.hash_of("node")], rid, token(), NOW, client=client, quote=quote)
    assert node_only.outcome is ClaimOutcome.INCOMPLETE
    assert set((await store.states(rid)).values()) == {"issued"}
    won = await store.claim_all(hashes, rid, token(), NOW, client=client, quote=quote)
    assert won.outcome is ClaimOutcome.CLAIMED
    assert {(p.role, p.payee, p.amount_msat) for p in won.payees} == {
        ("node", paid.node.pubkey, paid.node_msat),
        ("router_fee", paid.router.pubkey, paid.fee_msat),
    }


async def test_a_refused_claim_of_several_hashes_changes_none(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    holder = token()
    assert await claim_one(store, paid.hash_of("router_fee"), paid.request.id, holder, NOW) is ClaimOutcome.CLAIMED
    assert await claim_all(store, list(paid.preimages), paid.request.id, token(), NOW) is ClaimOutcome.IN_USE
    assert await store.states(paid.request.id) == {paid.hash_of("router_fee"): "paid", paid.hash_of("node"): "issued"}


async def test_a_request_is_recorded_whole_or_not_at_all(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    first = await issued(store)
    clash = Paid()
    request = decode_payload(clash.request.content, PaymentRequest)
    # a second request listing a payment hash the first already holds: refused, and no row of it stays
    reused = msgspec.structs.replace(request.payees[0], payment_hash=first.hash_of("node"))
    bad = msgspec.structs.replace(request, payees=[reused, request.payees[1]])
    with pytest.raises(asyncpg.UniqueViolationError):
        await store.record(clash.request, bad)
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests WHERE id = $1", clash.request.id) == 0
    assert await db_pool.fetchval("SELECT count(*) FROM payment_payees WHERE request_id = $1", clash.request.id) == 0


async def test_stale_claims_of_a_dead_replica_are_released(db_pool: asyncpg.Pool) -> None:
    store = PaymentStore(db_pool)
    paid = await issued(store)
    assert await claim_all(store, list(paid.preimages), paid.request.id, token(), NOW) is ClaimOutcome.CLAIMED
    assert await store.release_stale(time.time() - 3600) == 0  # claimed just now: not stale
    assert await store.release_stale(time.time() + 1) >= 2
    assert set((await store.states(paid.request.id)).values()) == {"released"}
    assert await claim_all(store, list(paid.preimages), paid.request.id, token(), NOW) is ClaimOutcome.CLAIMED


# --- the node's own claims ---


def node_claim(payment_hash: str | None = None, request_id: str | None = None) -> NodeClaim:
    return NodeClaim(
        payment_hash=payment_hash or secrets.token_hex(32),
        request_id=request_id or secrets.token_hex(32),
        router="r" * 64,
        client="c" * 64,
        amount_msat=7_000,
        expires_at=NOW + 600,
    )


async def test_the_node_claims_its_invoice_once_and_again_after_a_release(db_pool: asyncpg.Pool) -> None:
    claims = NodeClaims(db_pool)
    claim = node_claim()
    first, retry = token(), token()
    assert await claims.claim(claim, first, NOW) is ClaimOutcome.CLAIMED
    assert await claims.claim(claim, retry, NOW) is ClaimOutcome.IN_USE
    assert not await claims.release(claim.payment_hash, retry)
    assert await claims.release(claim.payment_hash, first)
    assert await claims.claim(claim, retry, NOW + 1) is ClaimOutcome.CLAIMED
    assert await claims.consume(claim.payment_hash, retry)
    assert await claims.claim(claim, token(), NOW + 2) is ClaimOutcome.ALREADY_CONSUMED
    assert not await claims.release(claim.payment_hash, retry)  # consumed is final


async def test_the_node_refuses_expired_and_rebound_invoices(db_pool: asyncpg.Pool) -> None:
    claims = NodeClaims(db_pool)
    late = node_claim()
    assert await claims.claim(late, token(), late.expires_at) is ClaimOutcome.EXPIRED
    assert await db_pool.fetchval("SELECT count(*) FROM payment_claims WHERE payment_hash = $1", late.payment_hash) == 0
    claim = node_claim()
    holder = token()
    assert await claims.claim(claim, holder, NOW) is ClaimOutcome.CLAIMED
    assert await claims.release(claim.payment_hash, holder)
    rebound = node_claim(claim.payment_hash)  # the same invoice under another payment request
    assert await claims.claim(rebound, token(), NOW) is ClaimOutcome.UNKNOWN
    assert await claims.claim(claim, token(), claim.expires_at + 1) is ClaimOutcome.EXPIRED


async def test_two_node_processes_claiming_at_once_have_one_winner(
    db_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    processes = [NodeClaims(db_pool), NodeClaims(second_pool)]
    for _ in range(ROUNDS):
        claim = node_claim()
        outcomes = await asyncio.gather(*(processes[i % 2].claim(claim, token(), NOW) for i in range(RACERS)))
        assert outcomes.count(ClaimOutcome.CLAIMED) == 1, outcomes
        assert set(outcomes) == {ClaimOutcome.CLAIMED, ClaimOutcome.IN_USE}
