"""A node releases the claims a dead process of it left held (docs/payments.md#single-use-claims): real Postgres,
a real node (its start runs the release), and a paid request end to end through a real router on loopback
(tests/support/paid_network.py). A process "dies" here by claiming and never settling; its claim is then aged
in the database, as the clock would age it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from fedai.protocol.errors import ErrorCode
from fedai.protocol.keys import Keys
from fedai.protocol.messages import PaymentRequest, decode_payload
from fedai.protocol.payment import ClaimOutcome
from fedai.sdk import AsyncClient, RouterError
from fedai.store import create_pool
from fedai_node.app import create_app
from fedai_node.config import NodeSettings
from fedai_node.payment_claims import NodeClaim, NodeClaims
from fedai_node.stale_claims import StaleClaims
from tests.support.paid_network import MODEL, NETWORK, PaidNetwork, paid_network
from tests.support.router import reset_database
from tests.support.servers import free_port, serve_app
from tests.support.tls import SelfSigned, self_signed
from tests.support.wait import eventually_async

pytestmark = pytest.mark.integration

STALE_S = 300
HOUR = 3600.0
ROUNDS = 5
CLAIMS_PER_ROUND = 40


def new_claim(expires_in_s: float = HOUR) -> NodeClaim:
    return NodeClaim(
        secrets.token_hex(32), secrets.token_hex(32), "r" * 64, "c" * 64, 7_000, time.time() + expires_in_s
    )


async def held(claims: NodeClaims, pool: asyncpg.Pool, held_for_s: float, claim: NodeClaim | None = None) -> str:
    """A claim taken `held_for_s` ago by a process that never settled it; returns that process's claimant."""
    claim = claim or new_claim()
    claimant = secrets.token_hex(16)
    assert await claims.claim(claim, claimant, time.time()) is ClaimOutcome.CLAIMED
    await age(pool, claim.payment_hash, held_for_s)
    return claimant


async def age(pool: asyncpg.Pool, payment_hash: str, seconds: float) -> None:
    await pool.execute(
        "UPDATE payment_claims SET claimed_at = now() - make_interval(secs => $2) WHERE payment_hash = $1",
        payment_hash,
        seconds,
    )


async def state(pool: asyncpg.Pool, payment_hash: str) -> str:
    value: str = await pool.fetchval("SELECT state FROM payment_claims WHERE payment_hash = $1", payment_hash)
    return value


async def test_a_dead_processes_claim_is_released_and_serves_once(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    dead, fresh, spent = new_claim(), new_claim(), new_claim()
    zombie = await held(claims, db_pool, STALE_S + 60, dead)
    await held(claims, db_pool, STALE_S - 60, fresh)  # a request still running: younger than the delay
    spender = await held(claims, db_pool, 0, spent)
    assert await claims.consume(spent.payment_hash, spender)
    await age(db_pool, spent.payment_hash, 2 * HOUR)  # consumed long ago: final whatever its age

    assert await StaleClaims(db_pool, STALE_S).run() == 1

    assert [await state(db_pool, c.payment_hash) for c in (dead, fresh, spent)] == ["released", "claimed", "consumed"]
    assert await claims.claim(spent, secrets.token_hex(16), time.time()) is ClaimOutcome.ALREADY_CONSUMED
    retry = secrets.token_hex(16)  # the client's proof, presented again
    assert await claims.claim(dead, retry, time.time()) is ClaimOutcome.CLAIMED
    # the dead process, were it only stuck, can neither spend nor give back what it no longer holds
    assert not await claims.consume(dead.payment_hash, zombie)
    assert not await claims.release(dead.payment_hash, zombie)
    assert await claims.consume(dead.payment_hash, retry)
    assert await claims.claim(dead, secrets.token_hex(16), time.time()) is ClaimOutcome.ALREADY_CONSUMED
    assert await StaleClaims(db_pool, STALE_S).run() == 0  # nothing more to release


async def test_an_expired_stale_claim_is_released_for_retention_but_never_claimed_again(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    claim = new_claim(expires_in_s=60)
    await held(claims, db_pool, STALE_S + 1, claim)
    assert await StaleClaims(db_pool, STALE_S).run() == 1
    assert await claims.claim(claim, secrets.token_hex(16), claim.expires_at + 1) is ClaimOutcome.EXPIRED


@pytest.fixture
async def second_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Another node process: its own connection pool on the same database."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def test_node_processes_releasing_at_once_release_each_claim_once(
    db_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    processes = [StaleClaims(db_pool, STALE_S), StaleClaims(second_pool, STALE_S)]
    for _ in range(ROUNDS):
        stale = [new_claim() for _ in range(CLAIMS_PER_ROUND)]
        for claim in stale:
            await held(claims, db_pool, STALE_S + 60, claim)
        counts = await asyncio.gather(*(processes[i % 2].run() for i in range(6)))
        assert sum(counts) == CLAIMS_PER_ROUND, counts
        assert {await state(db_pool, c.payment_hash) for c in stale} == {"released"}


def node_settings(database_url: str, port: int, **over: object) -> NodeSettings:
    fields: dict[str, object] = dict(
        keys=Keys.generate(),
        router_pubkeys=frozenset({Keys.generate().pubkey}),
        runner="mock",
        port=port,
        endpoint=f"http://127.0.0.1:{port}",
        db_url=database_url,
    )
    return NodeSettings(**(fields | over))  # type: ignore[arg-type]


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


async def test_a_node_releases_its_dead_processes_claims_when_it_starts(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    """A node restarted after a crash: its start releases what the dead process held, counted in its metrics."""
    await reset_database(db_pool)
    claims = NodeClaims(db_pool)
    dead, running = new_claim(), new_claim()
    await held(claims, db_pool, 2 * HOUR, dead)
    await held(claims, db_pool, 30, running)  # another live process's request, in flight
    port = free_port()
    async with serve_app(create_app(node_settings(database_url, port)), port=port) as url:
        await eventually_async(lambda: _is(db_pool, dead, "released"), what="the dead claim released")
        counted = 'fedai_node_payments_reconciled_total{action="released_claims"} 1.0'
        assert counted in await metrics_text(url)
    assert await state(db_pool, running.payment_hash) == "claimed"


async def test_a_stale_delay_below_the_runner_timeout_is_raised_to_it(database_url: str, db_pool: asyncpg.Pool) -> None:
    """NodeSettings built by hand with a delay shorter than a request may run: the node never uses it."""
    await reset_database(db_pool)
    port = free_port()
    app = create_app(node_settings(database_url, port, payment_stale_s=30, runner_timeout_ms=600_000))
    async with serve_app(app, port=port):
        releaser = app.state.node.lifecycle.stale_claims
        assert releaser is not None and releaser.stale_s == 660


async def _is(pool: asyncpg.Pool, claim: NodeClaim, wanted: str) -> bool:
    return await state(pool, claim.payment_hash) == wanted


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("stale-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    async with paid_network(database_url, db_pool, tls, tmp_path) as network:
        yield network


async def test_a_proof_a_dead_node_process_held_is_served_once_after_the_release(
    net: PaidNetwork, db_pool: asyncpg.Pool
) -> None:
    async with AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as client:
        quote = await client.quote(MODEL, max_tokens=16, prompt="2+2?")
        proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
        event = await net.router.service.payment_store.event(proof.payment_request)
        assert event is not None
        request = decode_payload(event.content, PaymentRequest)
        share = next(p for p in request.payees if p.role == "node")
        # a process of the node claimed this proof, then died before answering (its claim is old now)
        dead = NodeClaim(
            share.payment_hash, event.id, net.router.pubkey, "c" * 64, share.amount_msat, request.expires_at
        )
        await held(NodeClaims(db_pool), db_pool, 2 * HOUR, dead)

        async def infer() -> object:
            return await client.infer(MODEL, "2+2?", max_tokens=16, quote_id=quote.quote.quote_id, payment=proof)

        with pytest.raises(RouterError) as held_by_the_dead:
            await infer()
        assert held_by_the_dead.value.code == ErrorCode.PAYMENT_IN_USE
        assert net.runner.served == 0

        node = net.node_app.state.node if net.node_app is not None else None
        assert node is not None and node.lifecycle.stale_claims is not None
        assert await node.lifecycle.stale_claims.run() == 1  # the node's own job (at start and every minute)

        chain = await infer()
        assert chain.node == net.node.keys.pubkey  # type: ignore[attr-defined]
        assert await state(db_pool, share.payment_hash) == "consumed"
        with pytest.raises(RouterError) as again:
            await infer()
        assert again.value.code == ErrorCode.PAYMENT_USED
    assert net.runner.served == 1
