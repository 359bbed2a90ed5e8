"""The router's state and lifecycle: database, registry, dispatcher, relays, background loops."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from fedai import __version__
from fedai.protocol.envelope import Opened, open_envelope
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Backpressure
from fedai.protocol.messages import Payload
from fedai.protocol.replay import MemoryReplayGuard, claim_or_raise
from fedai.service.tasks import cancel_and_wait
from fedai.store.db import DedicatedConnection, create_pool
from fedai.store.migrations import migrate
from fedai.store.nonces import PostgresReplayGuard
from fedai_router.config import RouterSettings
from fedai_router.dispatch import Dispatcher
from fedai_router.endpoints import EndpointValidator
from fedai_router.federation.announce import CHECK_INTERVAL_S, Announcer
from fedai_router.federation.peers import PeerBook
from fedai_router.housekeeping import Housekeeper
from fedai_router.metrics import RouterMetrics
from fedai_router.outbound import Outbound
from fedai_router.ratelimit import RateLimiter
from fedai_router.registry import WINDOW_MINUTES, Registry
from fedai_router.resolver import BoundedResolver
from fedai_router.retry import RetryBudget
from fedai_router.store.health import prune_stats
from fedai_router.store.metering import MeteringStore
from fedai_router.store.peers import load_peers

if TYPE_CHECKING:
    from fedai_router.federation.auction import Auctioneer
    from fedai_router.federation.bidder import Bidder

log = logging.getLogger("fedai.router")

P = TypeVar("P", bound=Payload)

NONCE_PRUNE_INTERVAL_S = 30.0
STATS_INTERVAL_S = 2.0
STATS_PRUNE_INTERVAL_S = 300.0


class RouterService:
    """Everything a request handler needs, created at start and closed at stop."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.pubkey = settings.keys.pubkey
        self.version = __version__
        self.metrics = RouterMetrics()
        self.limiter = RateLimiter(settings.rate_limit_max, settings.rate_limit_window_ms / 1000)
        # one resolver (bounded threads and time) for the heartbeat-time endpoint check and for connecting
        self.resolver = BoundedResolver(settings.dns_concurrency, settings.dns_timeout_ms / 1000)
        self.metrics.dns_running.set_function(lambda: self.resolver.running)
        self.metrics.dns_waiting.set_function(lambda: self.resolver.waiting)
        self.endpoints = EndpointValidator(settings.allow_private_endpoints, self.resolver)
        # every call to nodes and peers: connect-time address check, no redirects, generic errors
        self.outbound = Outbound(
            self.resolver, self.metrics.outbound_failures, allow_private=settings.allow_private_endpoints
        )
        self.recent = MemoryReplayGuard()
        # ids are kept as long as the most lenient check accepts an event: envelopes (clock skew) or NIP-98
        self.replay_window_s = max(settings.clock_skew_s, settings.nip98_window_s)
        self.node_counts: dict[str, int] = {}  # fresh/stale/unverified/cooldown, updated with the gauges
        self.policy = settings.policy
        self.rng = random.Random()
        self.retry_budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s)
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self.relays: Any = None  # fedai.nostr.RelayPool when ROUTER_RELAYS is set
        self.auctioneer: Auctioneer | None = None  # auctions (and bidding) when ROUTER_RELAYS is set
        self.bidder: Bidder | None = None
        # peer routers learned from relays
        self.peers = PeerBook.for_settings(settings, self.metrics.registry, self.endpoints)
        self.announcer = Announcer(self)  # fleet load, backpressure, and our announcements on relays
        # set in start()
        self.pool: asyncpg.Pool
        self.registry: Registry
        self.replay: PostgresReplayGuard
        self.metering: MeteringStore
        self.dispatcher: Dispatcher

    async def start(self) -> None:
        dsn = self.settings.db_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = await asyncio.to_thread(start_embedded, self.settings.data_dir / "pg")
            log.info("using embedded PostgreSQL", extra={"data_dir": str(self.settings.data_dir)})
        self.pool = await create_pool(dsn, min_size=2, max_size=self.settings.db_pool_max)
        async with self.pool.acquire() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        limits, retention = self.settings.registry_limits, self.settings.retention
        self.registry = Registry(self.pool, limits, retention, self.metrics.registry)
        await self.registry.refresh()
        self.update_node_gauges()
        # the two hot-path writers each keep one connection (their flushes are serialized by group commit)
        self._writers = [DedicatedConnection(dsn), DedicatedConnection(dsn)]
        self.replay = PostgresReplayGuard(self.pool, self._writers[0])
        self.metering = MeteringStore(self.pool, self._writers[1])
        await self.outbound.start()
        self.dispatcher = Dispatcher(
            self.keys,
            self.outbound,
            self.registry,
            self.metrics,
            timeout_s=self.settings.node_timeout_ms / 1000,
            connect_timeout_s=self.settings.node_connect_timeout_ms / 1000,
            skew_s=self.settings.clock_skew_s,
            max_attempts=self.settings.max_attempts,
            budget=self.retry_budget,
        )
        self._every(self.settings.registry_refresh_ms / 1000, "registry refresh", self._refresh)
        self._every(NONCE_PRUNE_INTERVAL_S, "nonce prune", self.replay.prune)
        self._every(STATS_INTERVAL_S, "health window exchange", self.registry.exchange_stats)
        self._every(STATS_PRUNE_INTERVAL_S, "health window prune", self._prune_stats)
        self.housekeeper = Housekeeper(self.pool, self.registry, retention, self.metrics.registry)
        self._every(retention.interval_s, "housekeeping", self.housekeeper.run)
        self.peers.restore(await load_peers(self.pool))
        self.announcer.update(time.time())
        self._every(CHECK_INTERVAL_S, "federation announce", self.announcer.tick)
        if self.settings.relays:
            from fedai_router.discovery import start_discovery
            from fedai_router.federation.peers import start_peers

            self.relays = await start_discovery(self)
            await start_peers(self)
            from fedai_router.federation.auction import start_auctions

            self.auctioneer, self.bidder = await start_auctions(self)
        if not self.settings.public_url:
            log.warning("ROUTER_PUBLIC_URL is not set: NIP-98 authorization is refused (API keys still work)")
        if not (self.settings.admin_token_sha256 or self.settings.admin_keys):
            log.warning("no ROUTER_ADMIN_TOKEN_SHA256 or ROUTER_ADMIN_KEYS: only the public /status summary is served")
        log.info("router started", extra={"pubkey": self.pubkey, "nodes": len(self.registry.nodes)})

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, *self._jobs])
        if self.relays is not None:
            await self.relays.close()
        await self.outbound.close()
        for writer in self._writers:
            await writer.close()
        await self.pool.close()

    @property
    def backpressure(self) -> Backpressure:
        """NORMAL / BUSY / SATURATED from the share of fleet capacity in use, updated every second."""
        return self.announcer.backpressure

    def spawn(self, job: Coroutine[Any, Any, None], what: str) -> None:
        """Run `job` in the background; it is cancelled at stop and its failure is logged, not lost."""
        task = asyncio.create_task(job, name=what)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "background job failed", extra={"job": task.get_name(), "error": type(task.exception()).__name__}
            )

    def _every(self, interval_s: float, what: str, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` every `interval_s` in the background. A database hiccup is logged as a warning; any other
        failure (a bug, a row that does not parse) is logged as an error; neither stops the loop."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await job()
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning(f"{what} failed", extra={"error": type(exc).__name__})
                except Exception as exc:  # noqa: BLE001 - one bad run must not end the loop for good
                    log.error(f"{what} failed unexpectedly", extra={"error": type(exc).__name__})

        self._tasks.append(asyncio.create_task(loop(), name=what))

    async def _prune_stats(self) -> None:
        await prune_stats(self.pool, 2 * WINDOW_MINUTES)

    async def _refresh(self) -> None:
        try:
            await self.registry.refresh()
        finally:
            self.update_node_gauges()

    def update_node_gauges(self) -> None:
        now = time.time()
        counts = {"fresh": 0, "stale": 0, "unverified": 0, "cooldown": 0}
        for node in self.registry.nodes.values():
            counts["fresh" if self.node_is_fresh(node.last_seen, node.heartbeat, now) else "stale"] += 1
            counts["unverified"] += not node.verified
            counts["cooldown"] += node.cooldown_until > now
        for state, n in counts.items():
            self.metrics.nodes.labels(state).set(n)
        self.node_counts = counts

    def node_is_fresh(self, last_seen: float, heartbeat: bool, now: float) -> bool:
        ttl = self.settings.heartbeat_ttl_ms / 1000 if heartbeat else self.settings.announce_ttl_s
        return now - last_seen <= ttl

    def open_addressed(
        self,
        body: bytes,
        cls: type[P],
        kind: int,
        *,
        signers: frozenset[str] | None = None,
        max_bytes: int | None = None,
    ) -> Opened[P]:
        """Open an envelope of `kind` addressed to this router (every rule but replay), then rate-limit its signer."""
        opened = open_envelope(
            body,
            cls,
            kinds=(kind,),
            recipient=self.pubkey,
            signers=signers,
            max_bytes=max_bytes or self.settings.max_request_bytes,
            skew_s=self.settings.clock_skew_s,
        )
        self.limiter.check(opened.event.pubkey)
        return opened

    def open_client(self, body: bytes, cls: type[P], kind: int) -> Opened[P]:
        """A client's envelope: client allowlist and blocklist, then the rate limit."""
        opened = self.open_addressed(body, cls, kind, signers=self.settings.client_allowlist or None)
        if opened.event.pubkey in self.settings.client_blocklist:
            raise FedaiError(ErrorCode.FORBIDDEN, "this client key is blocked")
        return opened

    async def claim(self, event: Event) -> None:
        """Record the event id in Postgres (authoritative across replicas) or raise `replay`. It is kept until
        no check of this router would accept the event any more (`replay_window_s` past its created_at)."""
        await claim_or_raise(self.replay, event, self.replay_window_s)

    async def claim_locally(self, event: Event) -> None:
        """This replica's memory of accepted ids: refuses a replay before any work is started for it."""
        await claim_or_raise(self.recent, event, self.replay_window_s)
