"""Heartbeats against small fake routers on loopback: cadence, addressing, trust and ACK verification."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import aiohttp
import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedai.protocol.envelope import Opened, open_envelope, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, NodeDescriptor
from fedai.service.config import Env
from fedai.service.http import error_response, event_response, json_response
from fedai_node.app import create_app
from fedai_node.config import from_env
from fedai_node.heartbeat import BeatResult, Heartbeat
from tests.support.servers import free_port, serve_app

pytestmark = pytest.mark.integration

INTERVAL_MS = 200


@dataclass
class FakeRouter:
    """A router that opens heartbeats like the real one and answers an ACK (or misbehaves on purpose)."""

    mode: str = "good"  # good | bad_sig | refuse
    keys: Keys = field(default_factory=Keys.generate)
    beats: list[tuple[float, Opened[NodeDescriptor]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    health_calls: int = 0
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/register-node", self.register, methods=["POST"]),
            ]
        )

    async def health(self, request: Request) -> Response:
        self.health_calls += 1
        return json_response({"status": "ok", "pubkey": self.keys.pubkey})

    async def register(self, request: Request) -> Response:
        body = await request.body()
        try:
            opened = open_envelope(body, NodeDescriptor, kinds={Kind.NODE_HEARTBEAT}, recipient=self.keys.pubkey)
        except FedaiError as err:
            self.errors.append(err.code.value)
            return error_response(err)
        self.beats.append((time.monotonic(), opened))
        if self.mode == "refuse":
            return error_response(FedaiError(ErrorCode.FORBIDDEN, "endpoint refused"))
        ack = seal(self.keys, Kind.ACK, Ack(), to=opened.event.pubkey, reply_to=opened.event.id)
        if self.mode == "bad_sig":
            sig = ("0" if ack.sig[0] != "0" else "1") + ack.sig[1:]
            ack = msgspec.structs.replace(ack, sig=sig)
        return event_response(ack)


@dataclass
class Network:
    node_keys: Keys
    node_url: str
    endpoint: str
    good: FakeRouter
    untrusted: FakeRouter
    bad_ack: FakeRouter
    refusing: FakeRouter


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def heartbeat_count(node_url: str, result: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node_url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fedai_node_heartbeats_total" and sample.labels.get("result") == result:
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
async def network() -> AsyncIterator[Network]:
    routers = [FakeRouter(), FakeRouter(), FakeRouter("bad_sig"), FakeRouter("refuse")]
    good, untrusted, bad_ack, refusing = routers
    async with AsyncExitStack() as stack:
        for router in routers:
            router.url = await stack.enter_async_context(serve_app(router.app()))
        node_keys = Keys.generate()
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        settings = from_env(
            Env(
                {
                    "NODE_PRIVATE_KEY": node_keys.nsec,
                    "NODE_RUNNER": "mock",
                    "NODE_PORT": str(port),
                    "NODE_HEARTBEAT_MS": str(INTERVAL_MS),
                    "ROUTER_ENDPOINT": ",".join(r.url for r in routers),
                    "ROUTER_PUBLIC_KEY": ",".join(r.keys.npub for r in (good, bad_ack, refusing)),
                }
            )
        )
        node_url = await stack.enter_async_context(serve_app(create_app(settings), port=port))
        yield Network(node_keys, node_url, endpoint, good, untrusted, bad_ack, refusing)


async def test_heartbeats_arrive_on_schedule_signed_and_addressed(network: Network) -> None:
    good = network.good
    await wait_for(lambda: len(good.beats) >= 5)
    assert good.errors == []
    arrivals = [t for t, _ in good.beats[:5]]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    interval = INTERVAL_MS / 1000
    assert min(gaps) >= interval * 0.9 - 0.05, gaps  # never early
    assert interval * 0.9 <= sum(gaps) / len(gaps) <= interval * 1.1 + 0.05, gaps  # on schedule on average
    assert max(gaps) <= interval * 1.1 + 0.25, gaps
    ids = set()
    for _, opened in good.beats:
        event, descriptor = opened.event, opened.payload
        assert event.kind == Kind.NODE_HEARTBEAT
        assert event.pubkey == network.node_keys.pubkey
        assert event.tag_values("p") == [good.keys.pubkey]
        nonce = event.tag("nonce")
        assert nonce is not None
        assert len(nonce) == 32
        ids.add(event.id)
        assert descriptor.endpoint == network.endpoint
        assert [m.id for m in descriptor.models] == ["fedai-mock-1"]
        assert descriptor.models[0].pricing.input_msat == 1000
        assert descriptor.capacity.max_concurrent == 4
    assert len(ids) == len(good.beats)
    assert await heartbeat_count(network.node_url, "ok") >= 5


async def test_router_with_unlisted_key_gets_no_heartbeat(network: Network) -> None:
    await wait_for(lambda: network.untrusted.health_calls >= 2 and len(network.good.beats) >= 2)
    assert network.untrusted.beats == []
    assert await heartbeat_count(network.node_url, "untrusted_router") >= 2


async def test_ack_with_bad_signature_is_a_failure(network: Network) -> None:
    await wait_for(lambda: len(network.bad_ack.beats) >= 2)

    async def counted() -> bool:
        return await heartbeat_count(network.node_url, "bad_ack") >= 2

    await wait_for(counted)
    assert network.bad_ack.errors == []
    # each failure makes the node learn the router's key again before its next beat
    assert network.bad_ack.health_calls >= len(network.bad_ack.beats)


async def test_refused_heartbeat_is_counted(network: Network) -> None:
    async def counted() -> bool:
        return await heartbeat_count(network.node_url, "rejected") >= 1

    await wait_for(counted)
    assert network.refusing.beats


async def test_heartbeats_stop_with_the_node() -> None:
    router = FakeRouter()
    async with serve_app(router.app()) as router_url:
        router.url = router_url
        settings = from_env(
            Env(
                {
                    "NODE_PRIVATE_KEY": Keys.generate().secret_hex,
                    "NODE_RUNNER": "mock",
                    "NODE_HEARTBEAT_MS": "100",
                    "ROUTER_ENDPOINT": router_url,
                    "ROUTER_PUBLIC_KEY": router.keys.pubkey,
                }
            )
        )
        async with serve_app(create_app(settings)):
            await wait_for(lambda: len(router.beats) >= 1, within=2)
        stopped_at = len(router.beats)
        await asyncio.sleep(0.3)  # three intervals: a loop still running would have beaten again
        assert len(router.beats) == stopped_at


async def test_a_router_with_another_key_is_named_with_the_key_expected(caplog: pytest.LogCaptureFixture) -> None:
    """A node pointed at the wrong router logs the key it saw next to the ones it was configured with."""
    wrong, expected = FakeRouter(), Keys.generate()
    async with serve_app(wrong.app()) as url, aiohttp.ClientSession() as session:
        heartbeat = Heartbeat(
            keys=Keys.generate(),
            endpoints=[url],
            trusted=[expected.pubkey],
            interval_ms=INTERVAL_MS,
            skew_s=60,
            session=session,
            describe=lambda: NodeDescriptor(endpoint="http://127.0.0.1:1", models=["m"]),
        )
        caplog.set_level(logging.ERROR, "fedai_node.heartbeat")
        assert await heartbeat.beat(url) is BeatResult.UNTRUSTED
    assert wrong.beats == []
    assert [r.getMessage() for r in caplog.records] == [
        f"router at {url} has key {wrong.keys.npub}, not the one configured in ROUTER_PUBLIC_KEY "
        f"({expected.npub}); no heartbeat sent"
    ]
