"""SSRF closed where the connection is made: the router's outbound connector judges the address it connects to
(DNS rebinding after registration, IP literals), never follows redirects, tells clients no upstream status or
address, and resolves names with bounded concurrency and time. Real HTTP on loopback throughout; DNS answers
are scripted by replacing only the resolver's lookup function (`tests.support.dns`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack
from fedai.sdk import AsyncClient
from fedai_router.outbound import Outbound
from fedai_router.resolver import BoundedResolver, ResolveTimeout
from tests.support.dns import FakeDNS
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

PUBLIC = "93.184.216.34"


class Counting:
    """An 'internal' HTTP service: counts every request it gets, whatever the path."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def app(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            self.requests.append(request.url.path)
            return Response(b'{"secret": "internal"}', media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "POST"])])


def answering(status: int, location: str | None = None, body: bytes = b"teapot") -> Starlette:
    """A 'node' whose every call (/infer, /infer/stream, /infer/cancel) answers `status` (a redirect if located)."""

    async def reply(request: Request) -> Response:
        if location is not None:
            return RedirectResponse(location + request.url.path, status_code=status)
        return Response(body, status_code=status, media_type="text/plain")

    return Starlette(routes=[Route("/{path:path}", reply, methods=["POST"])])


def outbound_failures(router: RunningRouter, target: str, reason: str) -> float:
    value = router.service.metrics.registry.get_sample_value(
        "fedai_router_outbound_failures_total", {"target": target, "reason": reason}
    )
    return value or 0.0


async def _infer(router: RunningRouter, mode: str) -> None:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        if mode == "unary":
            await client.infer("fake-model", "hello", max_tokens=8)
            return
        stream = await client.stream("fake-model", "hello", max_tokens=8)
        async for _ in stream:
            pass


async def call(router: RunningRouter, mode: str) -> FedaiError:
    """One inference through the router, unary or streamed; it must fail. Returns the client's error."""
    with pytest.raises(FedaiError) as err:
        await _infer(router, mode)
    return err.value


def assert_generic(err: FedaiError, *details: str) -> None:
    """The client's error names no upstream status, address, port or resolver detail."""
    assert err.code in ("upstream_error", "upstream_timeout", "no_capacity"), err
    for detail in details:
        assert detail not in err.message, (detail, err.message)


@asynccontextmanager
async def private_router(
    database_url: str, db_pool: asyncpg.Pool, dns: FakeDNS, **overrides: Any
) -> AsyncIterator[RunningRouter]:
    """A router as on the public internet (private endpoints refused) whose resolver asks `dns`."""
    await reset_database(db_pool)
    async with running_router(database_url, allow_private_endpoints=False, node_timeout_ms=3000, **overrides) as r:
        r.service.resolver.lookup = dns
        try:
            yield r
        finally:
            dns.gate.set()  # no lookup thread stays blocked after the test


# -- DNS rebinding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["unary", "stream"])
async def test_a_name_rebound_to_loopback_after_registration_is_refused_at_connect(
    database_url: str, db_pool: asyncpg.Pool, mode: str
) -> None:
    dns = FakeDNS({"rebind.test": PUBLIC})
    async with private_router(database_url, db_pool, dns) as router, AsyncExitStack() as stack:
        node = FakeNode()
        local = await stack.enter_async_context(serve_app(node.app()))  # the node really listens on loopback
        port = local.rsplit(":", 1)[1]
        node.endpoint = f"http://rebind.test:{port}"
        resp = await register(router.url, router.pubkey, node.keys, node.descriptor())
        assert resp.status_code == 200, resp.text  # judged public at heartbeat time (and that verdict is cached)
        dns.answers["rebind.test"] = "127.0.0.1"  # ... then the name answers loopback
        err = await call(router, mode)
        assert node.calls == 0  # no request reached the loopback service
        assert_generic(err, "127.0.0.1", "rebind", port, "refused")
        assert outbound_failures(router, "node", "address_refused") == 1
        assert "rebind.test" in dns.lookups  # the connector asked the (scripted) resolver: the check is real


async def test_ip_literals_are_judged_by_the_connector_without_the_resolver() -> None:
    """aiohttp connects to an IP literal without asking the resolver: the socket guard must see it."""
    internal = Counting()
    async with serve_app(internal.app()) as url:
        port = url.rsplit(":", 1)[1]
        event = seal(Keys.generate(), Kind.ACK, Ack(status="ok"), to=Keys.generate().pubkey)
        timeout = aiohttp.ClientTimeout(total=5)
        for allow_private in (False, True):
            dns = FakeDNS()
            failures = Counter("failures", "test", ["target", "reason"], registry=CollectorRegistry())
            outbound = Outbound(BoundedResolver(2, 2.0, lookup=dns), failures, allow_private=allow_private)
            await outbound.start()
            try:
                for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
                    target = f"http://{host}:{port}/x"
                    if allow_private:  # the control: the same calls do reach the service when allowed
                        reply = await outbound.post_event(
                            target, event, target="node", client_timeout=timeout, limit=1024
                        )
                        assert reply.status == 200
                        continue
                    with pytest.raises(FedaiError) as err:
                        await outbound.post_event(target, event, target="node", client_timeout=timeout, limit=1024)
                    assert err.value.code == "upstream_error" and "127.0.0.1" not in err.value.message
                    assert failures.labels("node", "address_refused")._value.get() >= 1
            finally:
                await outbound.close()
            assert dns.lookups == []  # never resolved: the literal went straight to the socket guard
            assert len(internal.requests) == (2 if allow_private else 0)


# -- redirects and what clients are told --------------------------------------------------------------------


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("mode", ["unary", "stream"])
async def test_redirects_are_never_followed(router: RunningRouter, status: int, mode: str) -> None:
    internal = Counting()
    async with AsyncExitStack() as stack:
        internal_url = await stack.enter_async_context(serve_app(internal.app()))
        node = FakeNode()
        node.endpoint = await stack.enter_async_context(serve_app(answering(status, internal_url + "/admin")))
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        err = await call(router, mode)
    assert internal.requests == []  # the signed request body was not replayed to the redirect target
    assert_generic(err, str(status), internal_url, internal_url.rsplit(":", 1)[1], "admin")
    assert outbound_failures(router, "node", "redirect") == 1


@pytest.mark.parametrize("mode", ["unary", "stream"])
async def test_an_unrecognised_answer_is_reported_without_its_status(router: RunningRouter, mode: str) -> None:
    async with serve_app(answering(418)) as url:
        node = FakeNode()
        node.endpoint = url
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        err = await call(router, mode)
    assert_generic(err, "418", "teapot", url)
    assert outbound_failures(router, "node", "http_4xx") == 1


# -- bounded resolution -------------------------------------------------------------------------------------


async def test_lookups_beyond_the_concurrency_bound_wait(database_url: str, db_pool: asyncpg.Pool) -> None:
    names = [f"n{i}.test" for i in range(4)]
    dns = FakeDNS({name: PUBLIC for name in names})
    dns.gate.clear()  # every scripted lookup blocks until released
    async with private_router(database_url, db_pool, dns, dns_concurrency=2, dns_timeout_ms=30_000) as router:
        resolver = router.service.resolver
        nodes = [FakeNode() for _ in names]
        for node, name in zip(nodes, names, strict=True):
            node.endpoint = f"http://{name}:8080"
        registrations = [
            asyncio.create_task(register(router.url, router.pubkey, n.keys, n.descriptor())) for n in nodes
        ]
        await eventually(lambda: (resolver.running, resolver.waiting) == (2, 2), what="two running, two waiting")
        assert dns.entered == 2  # the other two never reached the system resolver
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(router.url + "/metrics", headers=router.admin)).text
        assert "fedai_router_dns_running 2.0" in metrics and "fedai_router_dns_waiting 2.0" in metrics
        dns.gate.set()
        responses = await asyncio.gather(*registrations)
    assert [r.status_code for r in responses] == [200] * 4
    assert dns.entered == 4


async def test_a_slow_resolver_hits_the_timeout_with_a_typed_error(database_url: str, db_pool: asyncpg.Pool) -> None:
    dns = FakeDNS({"slow.test": PUBLIC, "fine.test": PUBLIC})
    async with private_router(database_url, db_pool, dns, dns_concurrency=1, dns_timeout_ms=300) as router:
        node = FakeNode()
        node.endpoint = "http://fine.test:8080"
        assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
        dns.gate.clear()
        entered = dns.entered
        # at registration: a typed 504, not a verdict on the endpoint
        slow = FakeNode()
        slow.endpoint = "http://slow.test:8080"
        resp = await register(router.url, router.pubkey, slow.keys, slow.descriptor())
        assert (resp.status_code, resp.json()["error"]["code"]) == (504, "upstream_timeout"), resp.text
        # the timed-out lookup still holds the only slot (its thread has not returned): the next one times out
        # waiting for it, without starting another thread
        with pytest.raises(ResolveTimeout):
            await router.service.resolver.addresses("slow.test", 80)
        assert (dns.entered - entered, router.service.resolver.running) == (1, 1)
        # at dispatch (connect time): the client gets a generic upstream_timeout
        err = await call(router, "unary")
        assert (err.code, err.status) == ("upstream_timeout", 504)
        assert_generic(err, "fine.test", "resol", "DNS")
        assert outbound_failures(router, "node", "dns_timeout") == 1
