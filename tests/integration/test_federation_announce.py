# Long but one concept: announcements on real relays and the peer policy that judges them.
"""Routers announce caps, prices and status on real relays and learn each other's, under the peer policy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from click.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fedai.cli.main import cli
from fedai.nostr import RelayPool, start_local_relay
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event, sign_event
from fedai.protocol.federation import RouterCaps, RouterLimits, RouterStatus
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, Payload
from fedai.store.migrations import migrate_dsn
from fedai_router.federation.peers import PeerBook
from fedai_router.store.peers import load_peers, save_announcement
from tests.support.fake_node import FakeNode, register
from tests.support.router import ADMIN_TOKEN, RunningRouter, reset_database, running_router
from tests.support.servers import free_port
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

TG = "text-generation"


# -- helpers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def second_database_url(database_url: str) -> AsyncIterator[str]:
    """A second database on the same server: a second router must not share the first one's registry."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") + "_peer"
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate_dsn(dsn)
    yield dsn
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def fresh(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await reset_database(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def publisher(url: str) -> AsyncIterator[RelayPool]:
    async with RelayPool([url]) as pool:
        assert await pool.wait_connected(5)
        yield pool


async def publish(pool: RelayPool, *events: Event) -> None:
    for event in events:
        results = await pool.publish(event)
        assert all(r.ok for r in results), results


def caps(models: list[str] | None = None, endpoint: str = "https://peer.example") -> RouterCaps:
    return RouterCaps(
        endpoint=endpoint,
        job_types=[TG],
        models=models if models is not None else ["m"],
        limits=RouterLimits(max_tokens=1024, max_request_bytes=65536),
        max_privacy=2,
    )


def status(queue_depth: int = 0) -> RouterStatus:
    return RouterStatus(backpressure="NORMAL", queue_depth=queue_depth, active_jobs=0, p95_latency_ms=1.0, nodes=1)


def announcement(
    keys: Keys,
    payload: Payload | str,
    kind: int,
    d: str,
    *,
    created_at: int | None = None,
    ttl: int = 180,
    expires: int | None = None,
) -> Event:
    now = created_at if created_at is not None else _now()
    return seal(
        keys,
        kind,
        payload,
        expiration=expires if expires is not None else now + ttl,
        extra_tags=[["d", d]],
        created_at=now,
    )


def _now() -> int:
    return int(time.time())


def peer_keys(book: PeerBook, model: str = "m", privacy: int = 0) -> list[str]:
    return [v.pubkey for v in book.peers_for(model, TG, privacy)]


def count(router: RunningRouter, kind: str, result: str) -> float:
    return router.service.federation.peers.events.labels(kind, result)._value.get()


async def node_with(router: RunningRouter, node: FakeNode) -> None:
    response = await register(router.url, router.pubkey, node.keys, node.descriptor())
    assert response.status_code == 200, response.text


def heartbeat(node: FakeNode, in_flight: int = 0) -> NodeDescriptor:
    descriptor = node.descriptor()
    descriptor.capacity.in_flight = in_flight
    return descriptor


# -- two real routers ---------------------------------------------------------------------------------


async def test_two_routers_learn_each_others_caps_prices_and_status(
    database_url: str, second_database_url: str, own_relay_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    await fresh(second_database_url)
    alpha = FakeNode(model="alpha", input_msat=1000, output_msat=2000, endpoint="http://127.0.0.1:9")
    beta = FakeNode(model="beta", input_msat=10, output_msat=20, endpoint="http://127.0.0.1:9")
    async with (
        running_router(
            database_url, relays=[own_relay_url], public_url="http://a.example", fee_ppm=100_000, fee_base_msat=7
        ) as a,
        running_router(second_database_url, relays=[own_relay_url], public_url="http://b.example") as b,
    ):
        await node_with(a, alpha)
        await node_with(b, beta)
        await eventually(
            lambda: a.pubkey in peer_keys(b.service.federation.peers, "alpha"), within=10, what="b learns a"
        )
        await eventually(
            lambda: b.pubkey in peer_keys(a.service.federation.peers, "beta"), within=10, what="a learns b"
        )

        view = b.service.federation.peers.view(a.pubkey)
        assert view is not None and view.endpoint == "http://a.example"
        assert view.caps.models == ["alpha"] and view.caps.job_types == [TG] and view.caps.settlement == ["none"]
        price = b.service.federation.peers.price(a.pubkey, "alpha", TG)
        assert price is not None and (price.input_msat, price.output_msat, price.base_msat) == (1100, 2200, 7)
        peer_status = b.service.federation.peers.status(a.pubkey)
        assert peer_status is not None and (peer_status.backpressure, peer_status.nodes) == ("NORMAL", 1)
        assert a.pubkey not in peer_keys(a.service.federation.peers, "alpha")  # never itself

        # B's status follows its caps once B's load check sees its node (up to a second later)
        await eventually(
            lambda: a.service.federation.peers.status(b.pubkey) is not None, within=10, what="a has b's status"
        )
        row = await db_pool.fetchrow("SELECT * FROM peers WHERE pubkey = $1", b.pubkey)
        assert row["caps"]["models"] == ["beta"] and list(row["prices"]) == [TG]
        assert row["status"]["backpressure"] == "NORMAL"
        assert set(row["announcements"]) == {"31020:caps", f"31021:{TG}", "31022:status"}

        async with httpx.AsyncClient() as http:
            listed = (await http.get(b.url + "/federation/peers", headers=b.admin)).json()
            state = (await http.get(b.url + "/status", headers=b.admin)).json()["federation"]
        entry = next(p for p in listed if p["pubkey"] == a.pubkey)
        assert entry["policy"] == "ok" and entry["fresh"] is True
        assert entry["caps"]["endpoint"] == "http://a.example"
        assert entry["prices"][TG]["models"][0]["input_msat"] == 1100
        assert entry["status"]["backpressure"] == "NORMAL"
        assert state["backpressure"] == "NORMAL"
        assert a.pubkey in {p["pubkey"] for p in state["peers"]}

        operator = ["--admin-token", ADMIN_TOKEN]
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["peers", "--router", b.url, *operator, "--json"])
        assert result.exit_code == 0, result.output
        assert a.pubkey in {p["pubkey"] for p in json.loads(result.output)}
        table = await asyncio.to_thread(CliRunner().invoke, cli, ["peers", "--router", b.url, *operator])
        assert table.exit_code == 0 and "a.example" in table.output


async def test_price_and_backpressure_changes_are_reannounced(
    database_url: str, second_database_url: str, own_relay_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    await fresh(second_database_url)
    node = FakeNode(model="gamma", input_msat=500, output_msat=500, capacity=2, endpoint="http://127.0.0.1:9")
    async with (
        running_router(database_url, relays=[own_relay_url], busy_at=0.5, saturated_at=0.9) as a,
        running_router(second_database_url, relays=[own_relay_url]) as b,
    ):
        await node_with(a, node)
        book = b.service.federation.peers
        await eventually(lambda: a.pubkey in peer_keys(book, "gamma"), within=10, what="b learns a")

        node.input_msat = 800
        await node_with(a, node)
        await eventually(
            lambda: getattr(book.price(a.pubkey, "gamma", TG), "input_msat", 0) == 800, within=10, what="the new price"
        )

        full = await register(a.url, a.pubkey, node.keys, heartbeat(node, in_flight=2))
        assert full.status_code == 200
        await eventually(lambda: a.service.federation.backpressure == "SATURATED", what="a saturated")
        await eventually(
            lambda: getattr(book.status(a.pubkey), "backpressure", "") == "SATURATED",
            within=10,
            what="b sees a saturated",
        )
        assert a.pubkey not in peer_keys(book, "gamma")  # a saturated peer is not offered work
        surged = book.price(a.pubkey, "gamma", TG)
        assert surged is not None and surged.surge > 1 and surged.input_msat > 800

        idle = await register(a.url, a.pubkey, node.keys, heartbeat(node, in_flight=0))
        assert idle.status_code == 200
        await eventually(lambda: a.pubkey in peer_keys(book, "gamma"), within=10, what="a back to NORMAL")
        assert getattr(book.status(a.pubkey), "backpressure", "") == "NORMAL"


# -- hostile input ------------------------------------------------------------------------------------


@asynccontextmanager
async def hostile_relay(events: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A relay that answers a subscription for peer announcements with `events` verbatim (forged ones too)."""

    async def serve_one(ws: ServerConnection) -> None:
        with suppress(ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                if msg[0] == "REQ":
                    if any(int(Kind.ROUTER_CAPS) in f.get("kinds", []) for f in msg[2:]):
                        for event in events:
                            await ws.send(json.dumps(["EVENT", msg[1], event]))
                    await ws.send(json.dumps(["EOSE", msg[1]]))
                elif msg[0] == "EVENT":
                    await ws.send(json.dumps(["OK", msg[1]["id"], True, ""]))

    async with serve(serve_one, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


def _flip(hex_str: str) -> str:
    return ("0" if hex_str[0] != "0" else "1") + hex_str[1:]


async def test_forged_expired_future_oversized_and_malformed_announcements_are_ignored_and_counted(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    now = _now()
    forger, late, early, big, broken, good = (Keys.generate() for _ in range(6))
    valid = announcement(forger, caps(), Kind.ROUTER_CAPS, "caps")
    forged_id = {**valid.to_dict(), "id": _flip(valid.id)}
    bad_sig = {**valid.to_dict(), "content": valid.content.replace("peer.example", "evil.example")}
    bad_sig["id"] = announcement(
        forger,
        bad_sig["content"],
        Kind.ROUTER_CAPS,
        "caps",
        created_at=valid.created_at,
        expires=int(valid.tag("expiration") or 0),
    ).id  # right id, signature of other bytes
    hostile = [
        forged_id,
        bad_sig,
        announcement(late, status(), Kind.ROUTER_STATUS, "status", created_at=now - 300, expires=now - 10).to_dict(),
        announcement(early, caps(), Kind.ROUTER_CAPS, "caps", created_at=now + 600).to_dict(),
        announcement(big, '{"pad": "' + "x" * 3000 + '"}', Kind.ROUTER_CAPS, "caps").to_dict(),
        announcement(broken, '{"job_type": "text-generation", "models": "nope"}', Kind.ROUTER_PRICE, TG).to_dict(),
        announcement(good, caps(), Kind.ROUTER_CAPS, "caps").to_dict(),  # the marker: handled last
    ]
    async with (
        hostile_relay(hostile) as url,
        running_router(database_url, relays=[url], peer_max_content_bytes=2048) as router,
    ):
        book = router.service.federation.peers
        await eventually(lambda: good.pubkey in peer_keys(book), within=10, what="the valid announcement")
        assert book.known() == [good.pubkey]
        assert (count(router, "status", "expired"), count(router, "caps", "future")) == (1, 1)
        assert (count(router, "caps", "oversized"), count(router, "price", "malformed")) == (1, 1)
        assert router.service.relays.stats["invalid"] == 2  # forged id, bad signature: never reach the book
        await eventually(lambda: count(router, "any", "invalid") == 2, what="pool refusals in the metric")
        async with httpx.AsyncClient() as http:
            text = (await http.get(router.url + "/metrics", headers=router.admin)).text
        assert 'fedai_router_peer_events_total{kind="caps",result="future"} 1.0' in text
        assert 'fedai_router_peer_events_total{kind="any",result="invalid"} 2.0' in text
    assert await db_pool.fetchval("SELECT array_agg(pubkey) FROM peers") == [good.pubkey]


async def test_blocked_muted_and_allowlisted_peers(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    await reset_database(db_pool)
    blocked, muted, good, stranger, allowed = (Keys.generate() for _ in range(5))
    async with (
        running_router(
            database_url,
            relays=[own_relay_url],
            peer_blocklist=frozenset({blocked.pubkey}),
            peer_mute=frozenset({muted.pubkey}),
        ) as router,
        publisher(own_relay_url) as pool,
    ):
        assert await router.service.relays.wait_connected(5)
        book = router.service.federation.peers
        await publish(pool, *(announcement(k, caps(["blockmute"]), Kind.ROUTER_CAPS, "caps") for k in (blocked, muted)))
        await publish(pool, announcement(good, caps(["blockmute"]), Kind.ROUTER_CAPS, "caps"))
        await eventually(lambda: good.pubkey in peer_keys(book, "blockmute"), what="the good peer")
        await eventually(lambda: muted.pubkey in book.known(), what="the muted peer is learned")
        assert blocked.pubkey not in book.known() and count(router, "caps", "blocked") >= 1
        assert peer_keys(book, "blockmute") == [good.pubkey]  # muted: learned, never chosen
        assert book.policy_state(muted.pubkey) == "muted"
        assert await db_pool.fetchval("SELECT count(*) FROM peers WHERE pubkey = $1", blocked.pubkey) == 0

    await reset_database(db_pool)
    async with running_router(
        database_url, relays=[own_relay_url], peer_allowlist=frozenset({allowed.pubkey})
    ) as router:
        book = router.service.federation.peers
        async with publisher(own_relay_url) as pool:
            await publish(pool, announcement(stranger, caps(["allow"]), Kind.ROUTER_CAPS, "caps"))
            await publish(pool, announcement(allowed, caps(["allow"]), Kind.ROUTER_CAPS, "caps"))
        await eventually(lambda: allowed.pubkey in peer_keys(book, "allow"), what="the allowed peer")
        assert book.known() == [allowed.pubkey]  # nobody else, not even peers learned by the previous router


async def test_web_of_trust_minimum_from_contact_lists(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    await reset_database(db_pool)
    f1, f2, vouched, half = (Keys.generate() for _ in range(4))
    async with (
        running_router(
            database_url, relays=[own_relay_url], follow=frozenset({f1.pubkey, f2.pubkey}), peer_wot_min=2
        ) as router,
        publisher(own_relay_url) as pool,
    ):
        assert await router.service.relays.wait_connected(5)
        book = router.service.federation.peers
        await publish(pool, *(announcement(k, caps(["wot"]), Kind.ROUTER_CAPS, "caps") for k in (vouched, half)))
        await eventually(lambda: count(router, "caps", "untrusted") >= 2, what="both refused as untrusted")

        await publish(pool, sign_event(f1, 3, "", [["p", vouched.pubkey], ["p", half.pubkey]]))
        await eventually(lambda: book.policy.endorsements(half.pubkey) == 1, what="f1's contact list")
        await publish(pool, sign_event(f2, 3, "", [["p", vouched.pubkey]]))
        # the second endorsement admits `vouched`: its announcement, refused earlier, is asked for again
        await eventually(lambda: vouched.pubkey in peer_keys(book, "wot"), within=10, what="vouched peer learned")
        assert half.pubkey not in book.known() and book.policy_state(half.pubkey) == "untrusted"
        assert count(router, "contacts", "accepted") == 2


async def test_a_peer_over_its_rate_budget_is_cut_off(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    await reset_database(db_pool)
    noisy = Keys.generate()
    async with (
        running_router(database_url, relays=[own_relay_url], peer_rate=3) as router,
        publisher(own_relay_url) as pool,
    ):
        assert await router.service.relays.wait_connected(5)
        book = router.service.federation.peers
        await publish(pool, announcement(noisy, caps(["rate"]), Kind.ROUTER_CAPS, "caps"))
        await eventually(lambda: noisy.pubkey in book.known(), what="the first announcement")
        now = _now()
        burst = [
            announcement(noisy, status(depth), Kind.ROUTER_STATUS, "status", created_at=now + depth)
            for depth in range(1, 6)
        ]
        await publish(pool, *burst)
        await eventually(lambda: router.service.relays.stats["over_budget"] >= 3, what="the excess dropped")
        await eventually(lambda: count(router, "any", "over_budget") >= 3, what="counted in the metric")
        assert getattr(book.status(noisy.pubkey), "queue_depth", None) == 2  # events 4 and 5 of 6 never arrived


async def test_relay_drops_and_comes_back(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    port = free_port()
    first = await start_local_relay(port=port)
    url = first.url
    second = None
    peer = Keys.generate()
    try:
        async with running_router(database_url, relays=[url]) as router:
            relays, book = router.service.relays, router.service.federation.peers
            async with publisher(url) as pool:
                await publish(
                    pool, announcement(peer, caps(["restart"], "https://v1.example"), Kind.ROUTER_CAPS, "caps")
                )
            await eventually(lambda: book.endpoint(peer.pubkey) == "https://v1.example", what="learned before")

            first.shutdown()
            await eventually(lambda: not relays.status()[url], what="the router notices the relay is gone")
            second = await start_local_relay(port=port)
            await eventually(
                lambda: relays.stats["reconnects"] >= 1 and relays.connected == 1,
                within=20,
                what="the router reconnects",
            )

            async with publisher(url) as pool:
                # the re-sent REQ and our publish race on different connections: publish until one is learned
                for attempt in range(20):
                    event = announcement(
                        peer,
                        caps(["restart"], f"https://v2-{attempt}.example"),
                        Kind.ROUTER_CAPS,
                        "caps",
                        created_at=_now() + attempt + 1,
                    )
                    await publish(pool, event)
                    with suppress(AssertionError):
                        await eventually(lambda: "v2-" in (book.endpoint(peer.pubkey) or ""), within=0.5)
                        break
                assert "v2-" in (book.endpoint(peer.pubkey) or "")

                # and our own announcements are back on the (empty) new relay
                seen: list[Event] = []

                async def collect(event: Event, _: str) -> None:
                    seen.append(event)

                await pool.subscribe([{"kinds": [int(Kind.ROUTER_CAPS)], "authors": [router.pubkey]}], collect)
                await eventually(lambda: bool(seen), within=10, what="the router re-announced itself")
    finally:
        first.shutdown()
        if second is not None:
            second.shutdown()


async def test_store_keeps_the_latest_announcement_per_peer_kind_and_d(db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    peer = "a" * 64

    async def save(kind: int, d: str, created_at: int, event_id: str) -> bool:
        return await save_announcement(
            db_pool,
            peer,
            kind=kind,
            d=d,
            content={"v": event_id},
            event_id=event_id * 64,
            created_at=created_at,
            expires_at=created_at + 60,
        )

    assert await save(31020, "caps", 100, "b")
    assert await save(31021, TG, 100, "b")
    assert await save(31021, "embedding", 90, "c")
    assert not await save(31020, "caps", 99, "0")  # older
    assert not await save(31020, "caps", 100, "c")  # same second, higher id
    assert await save(31020, "caps", 100, "a")  # same second, lower id wins (NIP-01)
    assert not await save(31021, TG, 100, "b")  # the same event again
    assert await save(31022, "status", 5, "d")
    (row,) = await load_peers(db_pool)
    assert (row.caps, row.status) == ({"v": "a"}, {"v": "d"})
    assert row.prices == {TG: {"v": "b"}, "embedding": {"v": "c"}}
    assert row.announcements["31020:caps"] == {"id": "a" * 64, "created_at": 100, "expires_at": 160}


async def test_store_keeps_at_most_the_bound_of_price_sheets_per_peer(db_pool: asyncpg.Pool) -> None:
    """The table enforces the sheet bound itself: another replica's memory cannot take a peer past it."""
    await reset_database(db_pool)
    peer = "b" * 64

    async def sheet(d: str, created_at: int = 100) -> bool:
        return await save_announcement(
            db_pool,
            peer,
            kind=31021,
            d=d,
            content={"v": d},
            event_id=f"{created_at:064x}",
            created_at=created_at,
            expires_at=None,
            max_price_sheets=2,
        )

    assert [await sheet(d) for d in ("one", "two", "three")] == [True, True, False]
    assert await sheet("two", created_at=101)  # a held job type still updates
    (row,) = await load_peers(db_pool)
    assert row.prices == {"one": {"v": "one"}, "two": {"v": "two"}}
    assert set(row.announcements) == {"31021:one", "31021:two"}
