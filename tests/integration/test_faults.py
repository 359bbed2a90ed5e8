"""Fault tests: the database restarted under load, the relay killed and restarted.

The database here is an embedded PostgreSQL of this module's own (never the machine's server, which other
tests share): it is stopped and started again while a router in this process serves a fixed concurrency of
signed requests through a scripted node.
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from fedai.nostr import RelayPool, build_filter, start_local_relay
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, encode_payload
from fedai.store.embedded import start_embedded, stop_embedded
from fedai.store.migrations import migrate_dsn
from tests.support.fake_node import FakeNode, register
from tests.support.load import LoadRecord, Outcome, closed_loop, send
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CONCURRENCY = 8
MODEL = "fault-model"


@dataclass
class EmbeddedDatabase:
    pgdata: Path
    dsn: str

    async def stop(self) -> None:
        await asyncio.to_thread(stop_embedded, self.pgdata)

    async def start(self) -> None:
        dsn = await asyncio.to_thread(start_embedded, self.pgdata)
        assert dsn == self.dsn, "the restarted server must listen where the first one did"


@pytest.fixture(scope="module")
def embedded_database() -> Iterator[EmbeddedDatabase]:
    with tempfile.TemporaryDirectory(prefix="fedai-fault-pg-") as tmp:
        pgdata = Path(tmp) / "pg"
        dsn = start_embedded(pgdata)
        try:
            yield EmbeddedDatabase(pgdata, dsn)
        finally:
            stop_embedded(pgdata)


@dataclass
class RestartRun:
    """What the clients saw around one database restart, and what the database holds afterwards."""

    record: LoadRecord
    down_at: float
    up_at: float
    replays: list[Outcome]
    recovery: list[Outcome]
    metering_by_origin: dict[str, int]
    node_calls: int


def _request(client: Keys, router: str) -> tuple[str, bytes]:
    event = seal(
        client, Kind.INFER_REQUEST, InferenceRequest(model=MODEL, prompt="ping", max_tokens=4), to=router, nonce=True
    )
    return event.id, event.to_json()


@pytest.fixture(scope="module")
async def restart_run(embedded_database: EmbeddedDatabase) -> AsyncIterator[RestartRun]:
    """Serve at a fixed concurrency; stop the database for a few seconds mid-run; start it again."""
    dsn = embedded_database.dsn
    await migrate_dsn(dsn)
    client = Keys.generate()
    node = FakeNode(model=MODEL, capacity=64)
    async with (
        serve_app(node.app()) as node_url,
        running_router(dsn, node_timeout_ms=1500, rate_limit_max=1_000_000) as router,
    ):
        node.endpoint = node_url
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        url = router.url + "/infer"
        stop = asyncio.Event()
        load = asyncio.create_task(
            closed_loop(url, lambda: _request(client, router.pubkey), concurrency=CONCURRENCY, stop=stop)
        )
        await asyncio.sleep(1.5)
        down_at = time.monotonic()
        await embedded_database.stop()
        await asyncio.sleep(2.0)
        await embedded_database.start()
        up_at = time.monotonic()
        await asyncio.sleep(3.0)
        stop.set()
        record = await load
        recovery = await _until_recovered(router, client)
        replays = await _resend(router, record)
        metering = await _metering_by_origin(dsn)
        yield RestartRun(record, down_at, up_at, replays, recovery, metering, node.calls)


async def _until_recovered(router: RunningRouter, client: Keys, deadline_s: float = 20.0) -> list[Outcome]:
    """Send one request at a time until one succeeds, then ten more; every outcome in order."""

    outcomes: list[Outcome] = []
    ended = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < ended and not any(o.status == 200 for o in outcomes):
            outcomes.append(await send(session, router.url + "/infer", *_swap(_request(client, router.pubkey)), 10))
            await asyncio.sleep(0.2)
        for _ in range(10):
            outcomes.append(await send(session, router.url + "/infer", *_swap(_request(client, router.pubkey)), 10))
    return outcomes


def _swap(pair: tuple[str, bytes]) -> tuple[bytes, str]:
    return pair[1], pair[0]


async def _resend(router: RunningRouter, record: LoadRecord) -> list[Outcome]:
    """A client retrying each failed request, and some answered ones, with the same signed event."""

    again = [*record.failed(), *record.ok()[:: max(1, len(record.ok()) // 50)]]
    async with aiohttp.ClientSession() as session:
        return [await send(session, router.url + "/infer", o.body, o.event_id, 10) for o in again]


async def _metering_by_origin(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT origin_id, count(*) AS n FROM metering_records GROUP BY origin_id")
    finally:
        await conn.close()
    return {r["origin_id"]: r["n"] for r in rows}


# --- (a) PostgreSQL restarted under load ----------------------------------------------------------------------


def test_the_run_saw_the_outage(restart_run: RestartRun) -> None:
    """Sanity: requests were served before, attempted during, and served after the outage."""
    r = restart_run.record
    assert any(o.status == 200 for o in r.between(0, restart_run.down_at))
    assert len(r.between(restart_run.down_at, restart_run.up_at)) >= CONCURRENCY
    assert any(o.status != 200 for o in r.outcomes), "the outage must have failed some requests"


def test_every_request_gets_one_typed_answer_and_none_hangs(restart_run: RestartRun) -> None:
    for outcome in [*restart_run.record.outcomes, *restart_run.replays, *restart_run.recovery]:
        assert outcome.status != 0, f"no answer within the client's timeout ({outcome.elapsed_s:.1f} s)"
        assert outcome.code != "untyped", f"HTTP {outcome.status} without a typed error body"


def test_requests_during_the_outage_get_a_typed_503_with_retry_after(restart_run: RestartRun) -> None:
    failed = restart_run.record.failed()
    assert failed
    assert {(o.status, o.code) for o in failed if o.status != 503} == set()
    assert all(o.retry_after for o in failed)


def test_no_request_is_answered_or_metered_twice(restart_run: RestartRun) -> None:
    answers = collections.Counter(
        o.event_id for o in restart_run.record.outcomes + restart_run.replays if o.status == 200
    )
    assert answers and max(answers.values()) == 1
    metered = restart_run.metering_by_origin
    assert max(metered.values()) == 1, "an origin id with two metering records"
    ok_ids = {
        o.event_id for o in [*restart_run.record.ok(), *restart_run.replays, *restart_run.recovery] if o.status == 200
    }
    assert ok_ids <= set(metered), "an answered request without its metering record"
    assert set(metered) <= ok_ids | {o.event_id for o in restart_run.record.failed()}


def test_a_request_resent_as_is_is_refused_or_served_once(restart_run: RestartRun) -> None:
    """The same signed event sent again gets a replay refusal, or one answer if its first try got none."""
    answered = {o.event_id for o in restart_run.record.ok()}
    assert answered & {o.event_id for o in restart_run.replays}, "some answered requests must have been resent"
    for outcome in restart_run.replays:
        assert outcome.code == "replay" or (outcome.status == 200 and outcome.event_id not in answered)


def test_the_router_recovers_without_a_restart(restart_run: RestartRun) -> None:
    recovery = restart_run.recovery
    assert any(o.status == 200 for o in recovery), f"still failing: {[(o.status, o.code) for o in recovery][-5:]}"
    assert [o.status for o in recovery[-10:]] == [200] * 10
    assert restart_run.node_calls >= len(restart_run.metering_by_origin)


# --- (b) the relay killed and restarted --------------------------------------------------------------------


async def _events_on(url: str, kind: int, author: str) -> list[Event]:
    """What the relay at `url` holds of `kind` by `author` (stored events, up to EOSE)."""
    got: list[Event] = []

    async def collect(event: Event, _url: str) -> None:
        got.append(event)

    async with RelayPool([url]) as pool:
        assert await pool.wait_connected(5)
        sub = await pool.subscribe([build_filter(kinds=[kind], authors=[author])], collect)
        await sub.wait_eose(5)
    return got


async def _held_within(url: str, kind: int, author: str, within: float) -> bool:
    ends = time.monotonic() + within
    while time.monotonic() < ends:
        if await _events_on(url, kind, author):
            return True
        await asyncio.sleep(0.25)
    return False


async def _announce(url: str, node: FakeNode) -> None:
    event = sign_event(
        node.keys,
        Kind.NODE_ANNOUNCE,
        encode_payload(node.descriptor()),
        [["d", "fedai-node"], ["t", "fedai"], ["model", node.model]],
    )
    async with RelayPool([url]) as pool:
        assert await pool.wait_connected(5)
        assert all(r.ok for r in await pool.publish(event))


async def test_relay_restart_router_reconnects_resubscribes_and_announces_again(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    first = await start_local_relay()
    url = first.url
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    replacement = None
    served = FakeNode(model="relay-fault-model")
    try:
        async with serve_app(served.app()) as node_url, running_router(database_url, relays=[url]) as router:
            served.endpoint = node_url
            relays = router.service.relays
            assert await relays.wait_connected(5)
            assert (await register(router.url, router.pubkey, served.keys, served.descriptor())).status_code == 200
            assert await _held_within(url, Kind.ROUTER_CAPS, router.pubkey, 10), "caps never announced"

            first.shutdown()  # the relay's store (in memory) goes with it
            await eventually(lambda: not relays.status()[url], what="the router noticing the relay is gone")
            replacement = await start_local_relay(port=port)
            await eventually(
                lambda: relays.stats["reconnects"] >= 1 and relays.connected == 1,
                within=15,
                what="the router reconnecting",
            )

            # announcements work again: the empty relay gets caps without waiting for ROUTER_ANNOUNCE_S (60 s)
            assert await _held_within(url, Kind.ROUTER_CAPS, router.pubkey, 10), "caps not re-announced"
            # discovery works again: the resubscribed router learns a node announced on the new relay
            late = FakeNode(model="announced-after-restart", endpoint="http://127.0.0.1:9")
            await _announce(url, late)
            await eventually(
                lambda: late.keys.pubkey in router.service.registry.nodes, within=10, what="discovery after the restart"
            )
    finally:
        first.shutdown()
        if replacement is not None:
            replacement.shutdown()
