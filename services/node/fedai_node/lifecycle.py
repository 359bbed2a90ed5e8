"""What runs beside the node's routes, started and stopped with the app: the replay store, model discovery
(retried until the runner is ready), heartbeats to routers and announcements on relays, and with NODE_DB_URL the
payment rows' retention and the release of claims a dead process held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import aiohttp

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.protocol.event import Event
from fedai.protocol.messages import NodeDescriptor
from fedai.service.tasks import cancel_and_wait
from fedai_node.admission import Admission
from fedai_node.announce import Announcer
from fedai_node.catalog import ModelCatalog
from fedai_node.config import NodeSettings, log_summary, min_payment_stale_s
from fedai_node.heartbeat import BeatResult, Heartbeat
from fedai_node.metrics import NodeMetrics
from fedai_node.payment_claims import NodeClaims
from fedai_node.payment_retention import PaymentPruner
from fedai_node.payments import NodePayments
from fedai_node.runners.base import Runner, RunnerError
from fedai_node.stale_claims import StaleClaims

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("fedai_node")

DISCOVERY_FIRST_S = 0.25  # retry model discovery after this long, doubling up to DISCOVERY_MAX_S
DISCOVERY_MAX_S = 5.0


class NodeLifecycle:
    """`start` opens the replay store and learns the runner's models (heartbeats and announcements begin once it
    knows them); `stop` releases everything, also after a failed start. A runner it `owns_runner` it closes."""

    def __init__(
        self,
        settings: NodeSettings,
        *,
        runner: Runner,
        owns_runner: bool,
        catalog: ModelCatalog,
        admission: Admission,
        metrics: NodeMetrics,
        describe: Callable[[], NodeDescriptor],
        announce: Callable[[], Event],
        payments: NodePayments,
        trusted: Collection[str] | None = None,
        admin: Callable[[asyncpg.Pool], Awaitable[None]] | None = None,
        payment_metrics: PaymentMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._owns_runner = owns_runner
        self._catalog = catalog
        self._admission = admission
        self._metrics = metrics
        self._describe = describe
        self._announce = announce
        self._payments = payments
        self._trusted = trusted if trusted is not None else settings.router_pubkeys  # live (admin API)
        self._admin = admin  # applies the admin API's stored changes, once the database is open
        self._session: aiohttp.ClientSession | None = None
        self._heartbeat: Heartbeat | None = None
        self._announcer: Announcer | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._db: asyncpg.Pool | None = None
        self.pruner: PaymentPruner | None = None  # the payment rows' retention, on NODE_DB_URL
        self._pruning: asyncio.Task[None] | None = None
        self._payment_metrics = payment_metrics
        self.stale_claims: StaleClaims | None = None  # releases claims a dead process held, on NODE_DB_URL
        self._releasing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self._settings
        log_summary(s, log)
        if s.db_url:
            await self._open_replay_store(s.db_url)
            if self._admin is not None and self._db is not None:
                await self._admin(self._db)
        self._session = aiohttp.ClientSession()
        if await self._try_load_models():
            await self._start_loops()
        else:  # the runner is down or loading: serve /health (503) and keep trying
            self._discovery = asyncio.create_task(self._discover(), name="fedai-node-discovery")

    async def _open_replay_store(self, dsn: str) -> None:
        """NODE_DB_URL's server, migrated; one that cannot be used is a `config error` naming the variable."""
        from fedai.store import PostgresReplayGuard, create_pool, migrate_dsn
        from fedai.store.db import CONNECT_TIMEOUT_S, START_ERRORS, redact_dsn, unusable_database, wait_for_database

        def describe(exc: BaseException) -> str:
            return str(unusable_database("NODE_DB_URL", redact_dsn(dsn), exc, dsn))

        try:  # NODE_DB_WAIT_S: a server not up yet is waited for that long
            await wait_for_database(
                lambda: asyncio.wait_for(migrate_dsn(dsn), CONNECT_TIMEOUT_S * 3), self._settings.db_wait_s, describe
            )
            self._db = await create_pool(dsn, min_size=1, max_size=4, timeout_s=CONNECT_TIMEOUT_S)
        except START_ERRORS as exc:
            raise unusable_database("NODE_DB_URL", redact_dsn(dsn), exc, dsn) from None
        self._admission.guard = PostgresReplayGuard(self._db)
        self.pruner = PaymentPruner(self._db, self._settings.payment_retention_s)
        if self.pruner.retention_s > 0:
            self._pruning = asyncio.create_task(self.pruner.loop(), name="fedai-node-payment-retention")
        s = self._settings  # the stale delay never below the longest request (NodeSettings built by hand included)
        stale_s = max(s.payment_stale_s, min_payment_stale_s(s.runner_timeout_ms))
        self.stale_claims = StaleClaims(self._db, stale_s, self._payment_metrics)
        self._releasing = asyncio.create_task(self.stale_claims.loop(), name="fedai-node-stale-claims")
        if self._payments.wallet is not None:
            self._payments.claims = NodeClaims(self._db)  # the node's single-use payment claims, beside it
            if self._payments.settlement is not None:  # and its refunds of unused shares
                self._payments.settlement.start(self._db, self._payments.wallet)

    async def stop(self) -> None:
        await cancel_and_wait([self._discovery, self._pruning, self._releasing])
        if self._payments.settlement is not None:
            await self._payments.settlement.stop()
        if self._announcer is not None:
            await self._announcer.stop()
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._session is not None:
            await self._session.close()
        if self._payments.wallet is not None:
            await self._payments.wallet.aclose()
        if self._db is not None:
            await self._db.close()
        if self._owns_runner:
            await self._runner.close()

    async def _start_loops(self) -> None:
        """Heartbeats and announcements begin once the node knows what it serves."""
        s = self._settings
        assert self._session is not None
        self._heartbeat = Heartbeat(
            keys=s.keys,
            endpoints=s.router_endpoints,
            trusted=self._trusted,
            interval_ms=s.heartbeat_ms,
            skew_s=s.clock_skew_s,
            session=self._session,
            describe=self._describe,
            on_result=self._count_beat,
        )
        self._heartbeat.start()
        if s.relays:
            self._announcer = Announcer(
                keys=s.keys,
                relays=s.relays,
                interval_s=s.announce_s,
                build=self._announce,
                on_result=lambda result: self._metrics.announces.labels(result).inc(),
            )
            await self._announcer.start()

    async def leaving(self) -> None:
        """The drain has begun (the descriptor now says `draining`): tell every router at once, so they stop
        sending requests before the heartbeat would expire; the heartbeat loop keeps saying it."""
        if self._heartbeat is not None:
            results = await self._heartbeat.beat_all()
            log.info("told routers the node is draining", extra={"results": [r.value for r in results]})

    @property
    def db(self) -> asyncpg.Pool | None:
        """The NODE_DB_URL pool, once started (None without NODE_DB_URL)."""
        return self._db

    def heartbeat_summary(self) -> list[dict[str, object]]:
        return [] if self._heartbeat is None else self._heartbeat.summary()

    async def tell_routers(self) -> list[str]:
        """A change routers must hear now (prices, a resumed drain): a heartbeat to every router, and the node's
        announcement on its relays; the heartbeat results."""
        results = [] if self._heartbeat is None else await self._heartbeat.beat_all()
        if self._announcer is not None:
            await self._announcer.publish_once()
        return [r.value for r in results]

    def _count_beat(self, result: BeatResult) -> None:
        self._metrics.heartbeats.labels(result.value).inc()

    async def _discover(self) -> None:
        delay = DISCOVERY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            if await self._try_load_models():
                await self._start_loops()
                return
            delay = min(delay * 2, DISCOVERY_MAX_S)

    async def _try_load_models(self) -> bool:
        name = self._runner.name
        try:
            async with asyncio.timeout(self._settings.runner_timeout_ms / 1000):
                await self._catalog.load()
        except RunnerError as exc:  # its message names no content: safe to log
            log.warning("runner not ready", extra={"runner": name, "code": exc.code.value, "reason": str(exc)})
            return False
        except Exception as exc:  # noqa: BLE001 - keep trying; log the type only
            log.warning("runner not ready", extra={"runner": name, "error_type": type(exc).__name__})
            return False
        log.info("runner ready", extra={"runner": name, "models": sorted(self._catalog.models)})
        return True
