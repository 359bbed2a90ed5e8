"""The paid path's statements against real PostgreSQL (docs/payments.md#end-to-end-cost): the claim returns the
stored payment request (nothing read back), a served request's claim is consumed by its metering record's insert
(only the claimant's, only claims still held, the request once every payee is), an answer that cannot be recorded
releases the claim, and the payment store's connection serves callers one at a time, the pool those that come
meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import MeteringRecord, PaymentRequest, decode_payload
from fedai.protocol.payment import ClaimOutcome
from fedai.sdk import AsyncClient, RouterError
from fedai.store.db import DedicatedOrPool
from fedai_router.store.metering import MeteringEntry, MeteringStore
from fedai_router.store.payments import Consumption, PaymentStore
from tests.support.paid_network import MODEL, NETWORK, paid_network
from tests.support.payments import NOW, Paid
from tests.support.router import reset_database
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(db_pool: asyncpg.Pool) -> PaymentStore:
    await reset_database(db_pool)
    return PaymentStore(db_pool)


async def issued(store: PaymentStore) -> Paid:
    paid = Paid()
    await store.record(paid.request, decode_payload(paid.request.content, PaymentRequest))
    return paid


async def claim(
    store: PaymentStore, paid: Paid, claimant: str, client: str | None = None
) -> tuple[ClaimOutcome, Event | None]:
    c = await store.claim_all(
        list(paid.preimages), paid.request.id, claimant, NOW, client=client or paid.client.pubkey, quote=paid.quote_id
    )
    return c.outcome, c.event


async def test_the_claim_returns_the_stored_payment_request_and_a_refusal_returns_none(store: PaymentStore) -> None:
    paid = await issued(store)
    outcome, event = await claim(store, paid, "first")
    assert outcome is ClaimOutcome.CLAIMED and event == paid.request  # as signed: id, content and signature
    assert await claim(store, paid, "second") == (ClaimOutcome.IN_USE, None)
    other = await issued(store)
    assert await claim(store, other, "thief", client=Keys.generate().pubkey) == (ClaimOutcome.UNKNOWN, None)


def entry(consume: Consumption | None) -> MeteringEntry:
    """A metering record as a node signs it (the event is not checked by the store)."""
    request_id = secrets.token_hex(32)
    record = MeteringRecord(
        request=request_id,
        model="m",
        input_tokens=3,
        output_tokens=5,
        wall_ms=1.0,
        bytes_in=10,
        bytes_out=20,
        prompt_sha256=hashlib.sha256(b"p").hexdigest(),
        price_msat=7,
    )
    event = Event(id=request_id, pubkey="a" * 64, created_at=NOW, kind=1, tags=[], content="{}", sig="b" * 128)
    return MeteringEntry(record, event, "origin", "client", "node", consume=consume)


async def states(store: PaymentStore, pool: asyncpg.Pool, paid: Paid) -> tuple[set[str], str]:
    request = await pool.fetchval("SELECT state FROM payment_requests WHERE id = $1", paid.request.id)
    return set((await store.states(paid.request.id)).values()), request


async def test_the_metering_insert_consumes_the_claims_it_carries_and_only_those(
    store: PaymentStore, db_pool: asyncpg.Pool
) -> None:
    served, other, released = await issued(store), await issued(store), await issued(store)
    for paid, holder in ((served, "served"), (other, "other"), (released, "released")):
        assert (await claim(store, paid, holder))[0] is ClaimOutcome.CLAIMED
    assert await store.release(released.request.id, "released") == 2
    metering = MeteringStore(db_pool)
    entries = [
        entry(Consumption(served.request.id, "served")),
        entry(None),  # an unpaid request in the same batch
        entry(Consumption(other.request.id, "not-the-holder")),
        entry(Consumption(released.request.id, "released")),  # given back: nothing to consume
    ]
    await asyncio.gather(*(metering.record(e) for e in entries))
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 4
    assert await states(store, db_pool, served) == ({"consumed"}, "consumed")
    assert await states(store, db_pool, other) == ({"paid"}, "issued")
    assert await states(store, db_pool, released) == ({"released"}, "issued")
    assert (await claim(store, served, "again"))[0] is ClaimOutcome.ALREADY_CONSUMED


@pytest.fixture
async def writer(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[DedicatedOrPool]:
    w = DedicatedOrPool(database_url, db_pool)
    yield w
    await w.close()


async def test_the_dedicated_connection_serves_one_caller_and_the_pool_the_others(writer: DedicatedOrPool) -> None:
    one_at_a_time = {(await writer.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"] for _ in range(5)}
    assert len(one_at_a_time) == 1  # the same connection each time
    together = await asyncio.gather(*(writer.fetch("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)") for _ in range(3)))
    pids = [rows[0]["pid"] for rows in together]
    assert len(set(pids)) == 3 and one_at_a_time <= set(pids)  # none waited for another; one had the dedicated
    with pytest.raises(asyncpg.UndefinedTableError):
        await writer.fetch("SELECT * FROM no_such_table")
    assert {(await writer.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]} == one_at_a_time  # still usable


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("statements-tls"))


async def test_an_answer_that_cannot_be_recorded_releases_the_claim(
    database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path
) -> None:
    async with (
        paid_network(database_url, db_pool, tls, tmp_path) as net,
        AsyncClient(net.router.url, router_pubkey=net.router.pubkey) as client,
    ):
        quote = await client.quote(MODEL, max_tokens=16, prompt="2+2?")
        proof = await client.pay(quote, net.client_wallet.wallet, network=NETWORK)
        # the node serves, but the router cannot store its metering record: no answer, and nothing consumed
        await db_pool.execute("ALTER TABLE metering_records ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        try:
            with pytest.raises(RouterError):
                await client.infer(MODEL, "2+2?", max_tokens=16, quote_id=quote.quote.quote_id, payment=proof)
        finally:
            await db_pool.execute("ALTER TABLE metering_records DROP CONSTRAINT refuse_all")
        states = await net.router.service.payment_store.states(proof.payment_request)
    assert set(states.values()) == {"released"}  # claimable again: the reconciliation flags it if it expires unused
    assert net.runner.served == 1
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0
