"""Two routers on a relay of their own for federation tests: requester A (no node) and provider B (one scripted
node), each with its own database, plus scripted peers (a bare relay pool with their own keys)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from fedai.nostr import RelayPool, start_local_relay
from fedai.protocol import nip44
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import JobSubmit, RouterCaps, RouterLimits, SealedJob, job_hash, job_request
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, Payload, encode_payload
from fedai_router.federation.auction import Auctioneer, Awarded
from fedai_router.federation.bidder import Bidder
from tests.support.fake_node import FakeNode, register
from tests.support.router import TABLES, RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.wait import eventually

MODEL = "fed-model"
JOB_TYPE = "text-generation"


@dataclass
class Duo:
    relay: str
    a: RunningRouter
    b: RunningRouter
    node: FakeNode
    stack: AsyncExitStack  # for more routers (a replica of A) or scripted peers

    @property
    def auctioneer(self) -> Auctioneer:
        assert self.a.service.federation.auctioneer is not None
        return self.a.service.federation.auctioneer

    @property
    def bidder(self) -> Bidder:
        assert self.b.service.federation.bidder is not None
        return self.b.service.federation.bidder

    async def router(self, dsn: str, **options: Any) -> RunningRouter:
        """Another router on this relay (e.g. a replica of A: same key, same database)."""
        router = await self.stack.enter_async_context(running_router(dsn, **COMMON, relays=[self.relay], **options))
        await ready(router)
        await learned(router, self.b.pubkey)
        return router

    async def scripted(self, keys: Keys | None = None) -> Scripted:
        """A bare relay pool signing with `keys`: a peer that says whatever a test makes it say."""
        pool = await self.stack.enter_async_context(RelayPool([self.relay]))
        assert await pool.wait_connected(5)
        return Scripted(keys or Keys.generate(), pool)


@dataclass
class Scripted:
    keys: Keys
    pool: RelayPool

    @property
    def pubkey(self) -> str:
        return self.keys.pubkey

    async def publish(self, kind: int, payload: Payload, **options: Any) -> Event:
        event = seal(self.keys, kind, payload, **options)
        assert any(r.ok for r in await self.pool.publish(event)), "no relay took the event"
        return event

    async def announce_caps(self, endpoint: str, models: list[str] | None = None, expires_in: int = 300) -> Event:
        caps = RouterCaps(
            endpoint=endpoint,
            job_types=[JOB_TYPE],
            models=models or [MODEL],
            limits=RouterLimits(max_tokens=1024, max_request_bytes=262_144),
            max_privacy=2,
        )
        return await self.publish(
            Kind.ROUTER_CAPS, caps, expiration=int(time.time()) + expires_in, extra_tags=[["d", "caps"], ["t", "fedai"]]
        )

    async def on(self, kinds: list[int], handler: Callable[[Event], Awaitable[None]]) -> None:
        async def deliver(event: Event, _relay: str) -> None:
            await handler(event)

        sub = await self.pool.subscribe([{"kinds": kinds}], deliver)
        assert await sub.wait_eose(5)


COMMON: dict[str, Any] = {"peer_rate": 100_000, "announce_s": 1, "reauction_cooldown_ms": 0}


async def ready(router: RunningRouter) -> None:
    svc = router.service
    assert await svc.relays.wait_connected(5)
    assert svc.federation.auctioneer is not None and await svc.federation.auctioneer.ready()
    if svc.federation.bidder is not None:
        assert await svc.federation.bidder.ready()


async def learned(router: RunningRouter, peer: str) -> None:
    """`router` has `peer`'s fresh caps for MODEL (a peer must have them to win an award)."""
    book = router.service.federation.peers
    await eventually(
        lambda: peer in {p.pubkey for p in book.peers_for(MODEL, JOB_TYPE, 0)},
        15,
        "the requester learned the provider's caps",
    )


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    finally:
        await conn.close()


@asynccontextmanager
async def duo(
    database_url: str,
    db_pool: asyncpg.Pool,
    b_database: str,
    *,
    a_options: dict[str, Any] | None = None,
    b_options: dict[str, Any] | None = None,
) -> AsyncIterator[Duo]:
    relay = await start_local_relay()
    await reset_database(db_pool)
    await truncate(b_database)
    try:
        async with AsyncExitStack() as stack:
            common = {**COMMON, "relays": [relay.url]}
            a = await stack.enter_async_context(running_router(database_url, **common, **(a_options or {})))
            b = await stack.enter_async_context(running_router(b_database, **common, **(b_options or {})))
            node = FakeNode(model=MODEL, capacity=8)
            node.endpoint = await stack.enter_async_context(serve_app(node.app()))
            assert (await register(b.url, b.pubkey, node.keys, node.descriptor())).status_code == 200
            await ready(a)
            await ready(b)
            await eventually(lambda: b.service.federation.backpressure == "NORMAL", 5, "B has capacity")
            await learned(a, b.pubkey)
            yield Duo(relay.url, a, b, node, stack)
    finally:
        relay.shutdown()


def job_submit(
    requester: Keys,
    provider: str,
    request: InferenceRequest,
    salt: str,
    *,
    job_id: str,
    award: str,
    privacy: int = 0,
    max_cost_msat: int = 10_000,
) -> Event:
    """A job.submit carrying `request` salted with `salt` (at PL1/PL2 sealed together with its salt)."""
    job = job_request(request)
    clear = privacy == 0
    sealed = None if clear else nip44.encrypt(requester, provider, encode_payload(SealedJob(request=job, salt=salt)))
    payload = JobSubmit(
        job_id=job_id,
        award=award,
        privacy=privacy,
        request=job if clear else None,
        salt=salt if clear else None,
        sealed=sealed,
        input_sha256=job_hash(request, salt),
        max_cost_msat=max_cost_msat,
    )
    return seal(requester, Kind.JOB_SUBMIT, payload, to=provider, nonce=True)


def submit_for(awarded: Awarded, requester: Keys, request: InferenceRequest, salt: str) -> Event:
    """The job.submit for an award A just made, carrying `request` (PL0)."""
    return job_submit(
        requester,
        awarded.peer,
        request,
        salt,
        job_id=awarded.job_id,
        award=awarded.award.id,
        max_cost_msat=awarded.bid_payload.price_msat,
    )


async def post_job(router: RunningRouter, event: Event) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(router.url + "/federation/job", content=event.to_json())
