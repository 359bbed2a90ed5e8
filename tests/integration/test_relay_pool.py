# Long but one concept: the relay pool on the wire (its relays, subscriptions and frames), real and hostile relays.
"""The relay pool against real websockets: the embedded relay, and small fake relays for hostile or NIP-42 cases."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fedai.nostr import RelayPool, build_filter, start_local_relay
from fedai.nostr.pool import AUTH_KIND, LIBRARY_MARGIN, MESSAGE_OVERHEAD, RESUBSCRIBE_MARGIN_S
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, sign_event, verify_event
from fedai.protocol.keys import Keys
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

KIND = 31023
FAST: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.2, "connect_timeout": 2.0}


# -- helpers ----------------------------------------------------------------------------------------


async def poll(predicate: Callable[[], bool], within: float) -> bool:
    """Poll `predicate` every 10 ms for up to `within` seconds; True as soon as it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if predicate():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Like `poll`, but fail the test when the condition does not come true in time."""
    if not await poll(predicate, within):
        pytest.fail(f"timed out waiting for {what}")


class Collector:
    """A subscription handler that records what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, str]] = []

    async def __call__(self, event: Event, url: str) -> None:
        self.events.append((event, url))

    @property
    def ids(self) -> list[str]:
        return [ev.id for ev, _ in self.events]


@asynccontextmanager
async def running_pool(urls: list[str], **kwargs: Any) -> AsyncIterator[RelayPool]:
    pool = RelayPool(urls, **{**FAST, **kwargs})
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def connected_pool_count(pool: RelayPool, n: int) -> None:
    await wait_until(lambda: pool.connected == n, what=f"{n} relays connected")


def note(keys: Keys, content: str = "{}", kind: int = KIND, tags: list[list[str]] | None = None) -> Event:
    return sign_event(keys, kind, content, tags if tags is not None else [["d", content[:32]]])


FakeHandler = Callable[["FakeRelay", ServerConnection, list[Any]], Awaitable[None]]


class FakeRelay:
    """A scripted relay on 127.0.0.1: records every client message and lets the test decide the answers."""

    def __init__(
        self,
        on_message: FakeHandler,
        on_connect: Callable[[FakeRelay, ServerConnection], Awaitable[None]] | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_connect = on_connect
        self.received: list[list[Any]] = []
        self.connections = 0
        self.url = ""
        self.state: dict[str, Any] = {}

    async def _serve_one(self, ws: ServerConnection) -> None:
        self.connections += 1
        with suppress(ConnectionClosed):
            if self.on_connect is not None:
                await self.on_connect(self, ws)
            async for raw in ws:
                msg = json.loads(raw)
                self.received.append(msg)
                await self.on_message(self, ws, msg)

    def messages(self, kind: str) -> list[list[Any]]:
        return [m for m in self.received if m and m[0] == kind]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeRelay]:
        async with serve(self._serve_one, "127.0.0.1", 0, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


async def send(ws: ServerConnection, msg: Any) -> None:
    await ws.send(msg if isinstance(msg, str) else json.dumps(msg))


async def ignore(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
    """A relay that never answers."""


# -- the embedded relay -----------------------------------------------------------------------------


async def test_publish_gets_ok_and_subscription_gets_stored_and_live_events(relay_url: str) -> None:
    author = Keys.generate()
    stored, live = note(author, "stored"), note(author, "live")
    async with running_pool([relay_url]) as publisher, running_pool([relay_url]) as reader:
        assert await publisher.wait_connected(5)
        assert await reader.wait_connected(5)
        assert publisher.status() == {relay_url: True}

        results = await publisher.publish(stored)
        assert [(r.url, r.ok) for r in results] == [(relay_url, True)]

        got = Collector()
        sub = await reader.subscribe([build_filter(kinds=[KIND], authors=[author.pubkey])], got)
        assert await sub.wait_eose(5)
        assert got.ids == [stored.id], "stored events are handled before EOSE is reported"

        assert all(r.ok for r in await publisher.publish(live))
        await wait_until(lambda: len(got.events) == 2, what="live event")
        assert got.events[1] == (live, relay_url)
        assert reader.stats["received"] == 2
        assert reader.stats["invalid"] == 0


async def test_publish_reports_unreachable_relay(relay_url: str) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    event = note(Keys.generate())
    idle = RelayPool([relay_url, dead])
    assert [(r.ok, r.message) for r in await idle.publish(event)] == [(False, "not connected")] * 2
    await idle.close()
    async with running_pool([relay_url, dead]) as pool:
        assert await pool.wait_connected(5)
        assert pool.status() == {relay_url: True, dead: False}
        assert pool.connected == 1
        results = {r.url: r for r in await pool.publish(event, timeout=2)}
        assert results[relay_url].ok
        assert not results[dead].ok
        assert results[dead].message == "not connected"


async def test_deduplicates_across_relays(relay_url: str) -> None:
    second = await start_local_relay()
    try:
        urls = [relay_url, second.url]
        author = Keys.generate()
        async with running_pool(urls) as publisher, running_pool(urls) as reader:
            await connected_pool_count(publisher, 2)
            await connected_pool_count(reader, 2)
            got = Collector()
            sub = await reader.subscribe([build_filter(kinds=[KIND], authors=[author.pubkey])], got)
            assert await sub.wait_eose(5)

            event = note(author, "twice")
            assert [r.ok for r in await publisher.publish(event)] == [True, True]
            await wait_until(lambda: reader.stats["duplicates"] == 1 and got.events != [], what="both copies")
            assert got.ids == [event.id]
            assert reader.stats["received"] == 2
    finally:
        second.shutdown()


async def test_author_budget_drops_and_counts_excess(relay_url: str) -> None:
    noisy, quiet = Keys.generate(), Keys.generate()
    noisy_events = [note(noisy, f"n{i}") for i in range(5)]
    quiet_events = [note(quiet, f"q{i}") for i in range(2)]
    async with running_pool([relay_url]) as publisher, running_pool([relay_url], author_budget=(3, 60.0)) as reader:
        assert await publisher.wait_connected(5)
        for ev in noisy_events + quiet_events:
            assert all(r.ok for r in await publisher.publish(ev))
        assert await reader.wait_connected(5)
        got = Collector()
        sub = await reader.subscribe([build_filter(kinds=[KIND], authors=[noisy.pubkey, quiet.pubkey])], got)
        assert await sub.wait_eose(5)
        by_author = [ev.pubkey for ev, _ in got.events]
        assert by_author.count(noisy.pubkey) == 3
        assert by_author.count(quiet.pubkey) == 2
        assert reader.stats["over_budget"] == 2


async def test_reconnects_and_resubscribes() -> None:
    first = await start_local_relay()
    url = first.url
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    author = Keys.generate()
    replacement = None
    try:
        async with running_pool([url]) as reader:
            assert await reader.wait_connected(5)
            got = Collector()
            sub = await reader.subscribe([build_filter(kinds=[KIND], authors=[author.pubkey])], got)
            assert await sub.wait_eose(5)

            first.shutdown()
            await wait_until(lambda: not reader.status()[url], what="the pool to notice the relay is gone")
            replacement = await start_local_relay(port=port)
            await wait_until(lambda: reader.stats["reconnects"] >= 1 and reader.connected == 1, what="reconnect")

            async with running_pool([url]) as publisher:
                assert await publisher.wait_connected(5)
                # The re-sent REQ and this publish travel on different connections; publish until one lands.
                published: set[str] = set()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not published.intersection(got.ids):
                    assert loop.time() < deadline, "resubscribed pool never received a new event"
                    event = note(author, f"after-restart-{len(published)}")
                    assert all(r.ok for r in await publisher.publish(event))
                    published.add(event.id)
                    await poll(lambda: bool(published.intersection(got.ids)), 0.5)
    finally:
        first.shutdown()
        if replacement is not None:
            replacement.shutdown()


async def test_handler_errors_are_contained_and_handler_may_publish(relay_url: str) -> None:
    author = Keys.generate()
    replies: list[str] = []

    async with running_pool([relay_url]) as pool:
        assert await pool.wait_connected(5)

        async def handler(event: Event, url: str) -> None:
            if event.content == "boom":
                raise RuntimeError("handler bug")
            # Publishing from inside a handler must not deadlock the connection that delivers OKs.
            reply = note(author, "reply-to-" + event.content, kind=KIND + 1)
            results = await pool.publish(reply, timeout=3)
            replies.append(reply.id if all(r.ok for r in results) else "failed")

        sub = await pool.subscribe([build_filter(kinds=[KIND], authors=[author.pubkey])], handler)
        assert await sub.wait_eose(5)
        for content in ("boom", "fine"):
            assert all(r.ok for r in await pool.publish(note(author, content)))
        await wait_until(lambda: len(replies) == 1, what="the handler's reply")
        assert replies[0] != "failed"
        assert pool.stats["handler_errors"] == 1
        assert pool.stats["reconnects"] == 0


async def test_closed_subscription_stops_delivery(relay_url: str) -> None:
    author = Keys.generate()
    flt = [build_filter(kinds=[KIND], authors=[author.pubkey])]
    async with running_pool([relay_url]) as pool:
        assert await pool.wait_connected(5)
        closed_got, open_got = Collector(), Collector()
        closed_sub = await pool.subscribe(flt, closed_got, sub_id="to-close")
        open_sub = await pool.subscribe(flt, open_got)
        assert await closed_sub.wait_eose(5)
        assert await open_sub.wait_eose(5)
        await closed_sub.close()
        assert closed_sub.closed
        event = note(author, "after-close")
        assert all(r.ok for r in await pool.publish(event))
        await wait_until(lambda: open_got.ids == [event.id], what="the open subscription")
        assert closed_got.events == []


async def test_close_leaves_no_tasks(relay_url: str) -> None:
    pool = RelayPool([relay_url, f"ws://127.0.0.1:{free_port()}"], backoff_initial=0.05, backoff_max=0.2)
    await pool.start()
    assert await pool.wait_connected(5)
    await pool.subscribe([{"kinds": [KIND], "limit": 0}], Collector())
    await pool.close()
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("fedai.nostr.") and not t.done()]
    assert leftovers == []
    assert pool.connected == 0


@pytest.mark.parametrize("urls", [[], ["http://127.0.0.1:1"], ["not a url"]])
def test_pool_refuses_bad_relay_urls(urls: list[str]) -> None:
    with pytest.raises(ValueError, match="relay"):
        RelayPool(urls)


async def test_duplicate_subscription_id_is_refused(relay_url: str) -> None:
    async with running_pool([relay_url]) as pool:
        await pool.subscribe([{"kinds": [KIND], "limit": 0}], Collector(), sub_id="same")
        with pytest.raises(ValueError, match="already open"):
            await pool.subscribe([{"kinds": [KIND]}], Collector(), sub_id="same")


# -- hostile relay ----------------------------------------------------------------------------------

SMALL_LIMIT = 4096


def _tampered(event: Event, **changes: Any) -> dict[str, Any]:
    return {**event.to_dict(), **changes}


def _flip(hex_str: str) -> str:
    return ("0" if hex_str[0] != "0" else "1") + hex_str[1:]


async def test_only_valid_events_reach_the_handler() -> None:
    author = Keys.generate()
    valid = note(author, "valid")
    forged_id = _tampered(note(author, "forged"), id=_flip(note(author, "x").id))
    forged_content = _tampered(valid, content="changed after signing")
    bad_sig = _tampered(note(author, "bad-sig"), sig=_flip(note(author, "bad-sig").sig))
    other_key = _tampered(note(author, "other"), pubkey=Keys.generate().pubkey)
    missing_sig = {k: v for k, v in note(author, "no-sig").to_dict().items() if k != "sig"}
    wrong_kind = note(author, "kind", kind=KIND + 7)
    inner_too_big = note(author, "x" * (SMALL_LIMIT + 200))  # frame under the message bound, event over it
    frame_too_big = note(author, "y" * (SMALL_LIMIT + 2 * MESSAGE_OVERHEAD))

    async def script(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
        if msg[0] != "REQ":
            return
        sub_id = msg[1]
        for raw_event in (forged_id, forged_content, bad_sig, other_key, missing_sig):
            await send(ws, ["EVENT", sub_id, raw_event])
        for event in (wrong_kind, inner_too_big, frame_too_big):
            await send(ws, ["EVENT", sub_id, event.to_dict()])
        await send(ws, '["EVENT", "' + sub_id + '", {"id": ')  # truncated JSON
        await send(ws, '{"not": "an array"}')
        await send(ws, '["EVENT"]')
        await send(ws, '["OK", "x", "not-a-bool", ""]')
        await send(ws, '["WHATEVER", 1]')
        await send(ws, ["NOTICE", "hello"])
        await send(ws, ["NOTICE", "n" * (SMALL_LIMIT + 2 * MESSAGE_OVERHEAD)])  # size is checked before parsing
        await send(ws, ["EVENT", "some-other-subscription", valid.to_dict()])
        await send(ws, ["EVENT", sub_id, valid.to_dict()])
        await send(ws, ["EVENT", sub_id, valid.to_dict()])
        await send(ws, ["EOSE", sub_id])

    async with FakeRelay(script).running() as relay, running_pool([relay.url], max_event_bytes=SMALL_LIMIT) as pool:
        assert await pool.wait_connected(5)
        got = Collector()
        sub = await pool.subscribe([build_filter(kinds=[KIND])], got)
        assert await sub.wait_eose(5)
        assert got.events == [(valid, relay.url)]
        stats = pool.stats
        assert stats["invalid"] == 5
        assert stats["oversized"] == 3
        assert stats["unmatched"] == 1
        assert stats["duplicates"] == 1
        assert stats["malformed"] == 4
        assert stats["unknown"] == 1
        assert stats["notices"] == 1
        assert stats["received"] == 10  # every parsed EVENT message, including the ones dropped
        assert stats["reconnects"] == 0, "none of this should cost the connection"


async def test_deeply_nested_frames_are_dropped_and_the_connection_kept() -> None:
    author = Keys.generate()
    valid = note(author, "after-the-deep-ones")
    deep = "[" * 100_000 + "]" * 100_000
    tags_deep = json.dumps(note(author, "tags").to_dict()).replace('"tags": [', '"tags": [' + deep + ", ", 1)
    extra_deep = json.dumps(note(author, "extra").to_dict())[:-1] + ', "extra": ' + deep + "}"

    async def script(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
        if msg[0] != "REQ":
            return
        sub_id = msg[1]
        await send(ws, deep)  # the whole frame
        await send(ws, f'["EVENT", "{sub_id}", {deep}]')  # the event
        await send(ws, f'["EVENT", "{sub_id}", {tags_deep}]')  # inside the event's tags
        await send(ws, f'["EVENT", "{sub_id}", {extra_deep}]')  # in a field a typed decoder would skip
        await send(ws, ["EVENT", sub_id, valid.to_dict()])
        await send(ws, ["EOSE", sub_id])

    async with FakeRelay(script).running() as relay, running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        got = Collector()
        sub = await pool.subscribe([build_filter(kinds=[KIND])], got)
        assert await sub.wait_eose(5)
        assert got.ids == [valid.id]
        assert pool.stats["malformed"] == 4
        assert (pool.stats["reconnects"], relay.connections) == (0, 1), "deep JSON must not cost the connection"


async def test_frame_over_library_limit_drops_connection_then_recovers() -> None:
    author = Keys.generate()
    valid = note(author, "after-reconnect")

    async def script(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
        if msg[0] != "REQ":
            return
        if relay.connections == 1:
            await send(ws, ["NOTICE", "z" * (SMALL_LIMIT + MESSAGE_OVERHEAD + LIBRARY_MARGIN + 1)])
        else:
            await send(ws, ["EVENT", msg[1], valid.to_dict()])
            await send(ws, ["EOSE", msg[1]])

    async with FakeRelay(script).running() as relay, running_pool([relay.url], max_event_bytes=SMALL_LIMIT) as pool:
        assert await pool.wait_connected(5)
        got = Collector()
        await pool.subscribe([build_filter(kinds=[KIND])], got)
        await wait_until(lambda: got.ids == [valid.id], what="the event after reconnecting")
        assert relay.connections == 2
        assert pool.stats["reconnects"] == 1
        assert pool.stats["notices"] == 0


async def test_resubscribe_asks_from_newest_event_seen() -> None:
    old = sign_event(Keys.generate(), KIND, "old", [], created_at=1_700_000_000)

    async def script(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
        if msg[0] != "REQ":
            return
        if relay.connections == 1:
            await send(ws, ["EVENT", msg[1], old.to_dict()])
            await send(ws, ["EOSE", msg[1]])
            await ws.close()
        else:
            await send(ws, ["EOSE", msg[1]])

    async with FakeRelay(script).running() as relay, running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        got = Collector()
        await pool.subscribe([{"kinds": [KIND], "since": 5}, {"kinds": [KIND + 1]}], got, sub_id="keep")
        await wait_until(lambda: len(relay.messages("REQ")) == 2, what="the re-sent REQ")
        first, second = relay.messages("REQ")
        assert first == ["REQ", "keep", {"kinds": [KIND], "since": 5}, {"kinds": [KIND + 1]}]
        since = old.created_at - RESUBSCRIBE_MARGIN_S
        assert second == ["REQ", "keep", {"kinds": [KIND], "since": since}, {"kinds": [KIND + 1], "since": since}]
        assert got.ids == [old.id]
        assert pool.stats["reconnects"] == 1


async def test_publish_times_out_without_ok() -> None:
    async with FakeRelay(ignore).running() as relay, running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        [result] = await pool.publish(note(Keys.generate()), timeout=0.3)
        assert not result.ok
        assert "timed out" in result.message
        assert relay.messages("EVENT"), "the event was sent"


async def test_publish_returns_relay_refusal_reason() -> None:
    async def refuse(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
        if msg[0] == "EVENT":
            await send(ws, ["OK", msg[1]["id"], False, "blocked: not on the list"])

    async with FakeRelay(refuse).running() as relay, running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        [result] = await pool.publish(note(Keys.generate()))
        assert (result.ok, result.message) == (False, "blocked: not on the list")
        assert len(relay.messages("EVENT")) == 1, "only auth-required is retried"


async def test_subscription_close_sends_close() -> None:
    async with FakeRelay(ignore).running() as relay, running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        sub = await pool.subscribe([{"kinds": [KIND]}], Collector(), sub_id="s1")
        await sub.close()
        await wait_until(lambda: ["CLOSE", "s1"] in relay.received, what="CLOSE at the relay")
        assert relay.messages("REQ") == [["REQ", "s1", {"kinds": [KIND]}]]


# -- NIP-42 -----------------------------------------------------------------------------------------


def _check_auth(relay: FakeRelay, raw_event: dict[str, Any]) -> bool:
    """What a NIP-42 relay checks: a valid kind-22242 event naming this relay and this connection's challenge."""
    ev = Event(**raw_event)
    try:
        verify_event(ev)
    except FedaiError:
        return False
    return ev.kind == AUTH_KIND and ev.tag("relay") == relay.url and ev.tag("challenge") == relay.state["challenge"]


async def auth_gate(relay: FakeRelay, ws: ServerConnection, msg: list[Any]) -> None:
    """Refuse EVENT and REQ until the client authenticates; challenge only once a client needs it.

    With `stale_challenges` set, the relay first issues those one at a time, each replacing the last before it
    is answered, and only then the challenge it accepts.
    """
    stale: list[str] = relay.state.get("stale_challenges", [])
    if msg[0] == "AUTH":
        answered = next((t[1] for t in msg[1]["tags"] if t[0] == "challenge"), None)
        if answered in stale:
            position = stale.index(answered) + 1
            await send(ws, ["AUTH", stale[position] if position < len(stale) else relay.state["challenge"]])
            return
        ok = _check_auth(relay, msg[1])
        if ok:
            relay.state["authed"] = msg[1]["pubkey"]
        await send(ws, ["OK", msg[1]["id"], ok, "" if ok else "invalid: bad auth"])
    elif msg[0] == "EVENT":
        if relay.state.get("authed"):
            await send(ws, ["OK", msg[1]["id"], True, ""])
        else:
            await send(ws, ["OK", msg[1]["id"], False, "auth-required: publish needs AUTH"])
            await send(ws, ["AUTH", stale[0] if stale else relay.state["challenge"]])
    elif msg[0] == "REQ":
        if relay.state.get("authed"):
            await send(ws, ["EVENT", msg[1], relay.state["stored"].to_dict()])
            await send(ws, ["EOSE", msg[1]])
        else:
            await send(ws, ["CLOSED", msg[1], "auth-required: reading needs AUTH"])
            await send(ws, ["AUTH", relay.state["challenge"]])


def _gated_relay(stored: Event | None = None) -> FakeRelay:
    relay = FakeRelay(auth_gate)
    relay.state.update(challenge="challenge-" + Keys.generate().pubkey[:16], stored=stored)
    return relay


async def test_publish_authenticates_and_retries_on_auth_required() -> None:
    keys = Keys.generate()
    relay = _gated_relay()
    async with relay.running(), running_pool([relay.url], auth_keys=keys) as pool:
        assert await pool.wait_connected(5)
        [result] = await pool.publish(note(keys, "needs-auth"))
        assert (result.ok, result.message) == (True, "")
        assert relay.state["authed"] == keys.pubkey
        assert len(relay.messages("EVENT")) == 2
        assert len(relay.messages("AUTH")) == 1


async def test_newer_challenge_supersedes_an_unanswered_one() -> None:
    keys = Keys.generate()
    relay = _gated_relay()
    relay.state["stale_challenges"] = ["stale-1", "stale-2"]
    async with relay.running(), running_pool([relay.url], auth_keys=keys) as pool:
        assert await pool.wait_connected(5)
        [result] = await pool.publish(note(keys, "after-three-challenges"))
        assert result.ok
        assert len(relay.messages("AUTH")) == 3
        assert relay.state["authed"] == keys.pubkey


async def test_publish_without_auth_keys_reports_auth_required() -> None:
    relay = _gated_relay()
    async with relay.running(), running_pool([relay.url]) as pool:
        assert await pool.wait_connected(5)
        [result] = await pool.publish(note(Keys.generate()))
        assert not result.ok
        assert result.message.startswith("auth-required:")
        assert relay.messages("AUTH") == []


async def test_subscription_resent_after_auth() -> None:
    keys = Keys.generate()
    stored = note(Keys.generate(), "behind-auth")
    relay = _gated_relay(stored)
    async with relay.running(), running_pool([relay.url], auth_keys=keys) as pool:
        assert await pool.wait_connected(5)
        got = Collector()
        sub = await pool.subscribe([build_filter(kinds=[KIND])], got)
        assert await sub.wait_eose(5)
        assert got.ids == [stored.id]
        assert len(relay.messages("REQ")) == 2


async def test_answers_challenge_sent_on_connect() -> None:
    keys = Keys.generate()
    relay = _gated_relay()

    async def challenge_on_connect(relay: FakeRelay, ws: ServerConnection) -> None:
        await send(ws, ["AUTH", relay.state["challenge"]])

    relay.on_connect = challenge_on_connect
    async with relay.running(), running_pool([relay.url], auth_keys=keys) as pool:
        await wait_until(lambda: relay.state.get("authed") == keys.pubkey, what="AUTH on connect")
        [result] = await pool.publish(note(keys, "already-authed"))
        assert result.ok
        assert len(relay.messages("EVENT")) == 1, "no retry needed"


async def test_auth_with_wrong_relay_url_is_refused() -> None:
    """The pool signs the URL it dialled; a relay that knows itself by another name refuses, and publish says so."""
    keys = Keys.generate()
    relay = _gated_relay()
    async with relay.running():
        other_name = relay.url.replace("127.0.0.1", "localhost")
        async with running_pool([other_name], auth_keys=keys) as pool:
            assert await pool.wait_connected(5)
            [result] = await pool.publish(note(keys, "wrong-name"), timeout=2)
            assert not result.ok
            assert result.message.startswith("auth-required:")
            assert len(relay.messages("AUTH")) == 1
            assert "authed" not in relay.state


# -- the relay process ------------------------------------------------------------------------------


async def test_relay_process_serves_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedai.nostr",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert line.startswith("relay listening on ws://127.0.0.1:")
        url = line.removeprefix("relay listening on ")
        async with running_pool([url]) as pool:
            assert await pool.wait_connected(5)
            assert all(r.ok for r in await pool.publish(note(Keys.generate())))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
