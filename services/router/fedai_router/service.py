"""The router's composition root: every part built once, with the collaborators it uses, then started and
stopped in order. Only `fedai_router.app` (and tests) use it; no part of the router reaches back into it.

At `start()`: the database (migrated), the registry (loaded), the replay store and metering, the outbound
client, the dispatcher; the request handlers; the background loops; with ROUTER_RELAYS, the relay pool (node
discovery); federation (peers, announcements, auctions).

One file, over 400 lines: it is the wiring of every part, and a reader looking for "who gets which
collaborator" should find all of it here. Its seam, if it grows further, is the payments wiring
(`_build_payments`, `_paid_offload`, `_edge_payments`), which could become its own builder."""

from __future__ import annotations

import logging
import time

import asyncpg

from fedai import __version__
from fedai.nostr import RelayPool
from fedai.observability.payment_metrics import PaymentMetrics
from fedai.payments.config import open_wallet
from fedai.payments.measured import MeasuredWallet
from fedai.payments.wallet import Wallet
from fedai.protocol.replay import MemoryReplayGuard
from fedai.service.drain import Drain
from fedai.store.nonces import PostgresReplayGuard
from fedai_router.admin import Operators
from fedai_router.admin_api import AdminApi
from fedai_router.admin_state import AdminState, ApiKeyTable
from fedai_router.background import Background
from fedai_router.claims import Claims
from fedai_router.client_wallets import ClientWallets
from fedai_router.completion import Completion
from fedai_router.config import RouterSettings
from fedai_router.dashboard import Dashboard
from fedai_router.dashboard_session import Sessions
from fedai_router.database import Database
from fedai_router.discovery import Discovery
from fedai_router.dispatch import Dispatcher
from fedai_router.endpoints import EndpointValidator
from fedai_router.failure import Failures
from fedai_router.federation import Federation
from fedai_router.housekeeping import Housekeeper
from fedai_router.infer import Infer
from fedai_router.intake import Intake
from fedai_router.manifests import Manifests
from fedai_router.metrics import RouterMetrics
from fedai_router.node_counts import NodeCounts
from fedai_router.openai_api.auth import Authenticator
from fedai_router.openai_api.edge_refunds import EdgeRefunds, offers_links
from fedai_router.openai_api.paying import EdgePayments
from fedai_router.openai_api.routes import OpenAI
from fedai_router.ops import Ops
from fedai_router.outbound import Outbound
from fedai_router.paid import Paid
from fedai_router.paid_offload import PaidOffload
from fedai_router.payment_requests import PaymentRequests, PaySettings
from fedai_router.planning import Planner
from fedai_router.pricing import Fees
from fedai_router.quotes import Quotes
from fedai_router.ratelimit import RateLimiter
from fedai_router.registration import Registration
from fedai_router.registry import WINDOW_MINUTES, Registry
from fedai_router.relay_metrics import RelayPoolCollector
from fedai_router.resolver import BoundedResolver
from fedai_router.retry import RetryBudget
from fedai_router.settlement import RouterSettlement
from fedai_router.store.health import prune_stats
from fedai_router.store.metering import MeteringStore
from fedai_router.store.payments import PaymentStore
from fedai_router.stream_relay import StreamRelay
from fedai_router.streaming import InferStream

log = logging.getLogger("fedai.router")

NONCE_PRUNE_INTERVAL_S = 30.0
STATS_INTERVAL_S = 2.0
STATS_PRUNE_INTERVAL_S = 300.0


class RouterService:
    """Everything the router is made of, created at start and closed at stop."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.pubkey = settings.keys.pubkey
        self.version = __version__
        self.started_at = time.time()
        self.policy = settings.policy
        self.metrics = RouterMetrics()
        self.failures = Failures(self.metrics)
        self.background = Background()
        self.drain = Drain(settings.drain_timeout_s)  # SIGTERM: new requests refused, those in flight finished
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
        self.intake = Intake(
            self.pubkey,
            self.limiter,
            settings.max_request_bytes,
            settings.clock_skew_s,
            settings.client_allowlist,
            settings.client_blocklist,
        )
        self.relays: RelayPool | None = None  # with ROUTER_RELAYS
        self.wallet: Wallet | None = None  # ROUTER_WALLET, opened in start()
        # set in start()
        self.database: Database
        self.pool: asyncpg.Pool
        self.registry: Registry
        self.replay: PostgresReplayGuard
        self.dispatcher: Dispatcher
        self.federation: Federation

    async def start(self) -> None:
        settings = self.settings
        self.database = database = await Database.open(settings)
        self.pool = pool = database.pool
        self.registry = registry = Registry(pool, settings.registry_limits, settings.retention, self.metrics.registry)
        await registry.refresh()
        self.node_counts = NodeCounts(registry.nodes, self.policy, self.metrics.nodes)
        self.node_counts.update()
        # the two hot-path writers each keep one connection (their flushes are serialized by group commit)
        self.replay = PostgresReplayGuard(pool, database.replay_writer)
        # ids are kept as long as the most lenient check accepts an event: envelopes (clock skew) or NIP-98
        self.claims = Claims(self.recent, self.replay, max(settings.clock_skew_s, settings.nip98_window_s))
        await self.outbound.start()
        self.dispatcher = Dispatcher(
            self.keys,
            self.outbound,
            registry,
            self.metrics,
            pool,
            timeout_s=settings.node_timeout_ms / 1000,
            connect_timeout_s=settings.node_connect_timeout_ms / 1000,
            skew_s=settings.clock_skew_s,
            max_attempts=settings.max_attempts,
            budget=RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s),
        )
        self._build_handlers(database)
        self._every_loop()
        if settings.relays:
            self.relays = await self._open_relays()
            await self.discovery.subscribe(self.relays)
        await self.federation.start(self.relays)
        self.ops = self._ops()
        await self._start_admin()
        if not settings.public_url:
            log.warning("ROUTER_PUBLIC_URL is not set: NIP-98 authorization is refused (API keys still work)")
        if not (settings.admin_token_sha256 or settings.admin_keys):
            log.warning("no ROUTER_ADMIN_TOKEN_SHA256 or ROUTER_ADMIN_KEYS: only the public /status summary is served")
        log.info("router started", extra={"pubkey": self.pubkey, "nodes": len(registry.nodes)})

    def _build_handlers(self, database: Database) -> None:
        """The parts that serve requests, each with what it uses."""
        settings, pool, registry, keys = self.settings, self.pool, self.registry, self.keys
        self.metering = MeteringStore(pool, database.metering_writer)
        self.fees = Fees(settings.fee_base_msat, settings.fee_ppm)
        self.api_keys = ApiKeyTable(settings.api_keys)
        self.completion = Completion(keys, self.metering, self.metrics)
        self.planner = Planner(
            pool,
            registry.tables,
            router=self.pubkey,
            policy=self.policy,
            max_attempts=settings.max_attempts,
            tokens_per_byte=settings.input_tokens_per_byte,
            tokens_overhead=settings.input_tokens_overhead,
        )
        self._build_payments()
        self.federation = Federation(
            keys=keys,
            settings=settings,
            version=self.version,
            pool=pool,
            registry=registry,
            policy=self.policy,
            intake=self.intake,
            claims=self.claims,
            planner=self.planner,
            dispatcher=self.dispatcher,
            completion=self.completion,
            outbound=self.outbound,
            endpoints=self.endpoints,
            metrics=self.metrics,
            background=self.background,
            fees=self.fees,
            wallet=self.wallet,
            refunds=self.paid.settlement,
        )
        self.paid_offload = self._paid_offload()
        self.infer = Infer(
            intake=self.intake,
            claims=self.claims,
            planner=self.planner,
            dispatcher=self.dispatcher,
            completion=self.completion,
            offloader=self.federation,
            paid=self.paid,
            offload=self.paid_offload,
        )
        self.relay = StreamRelay(
            keys=keys,
            dispatcher=self.dispatcher,
            outbound=self.outbound,
            planner=self.planner,
            claims=self.claims,
            completion=self.completion,
            failures=self.failures,
            metrics=self.metrics,
            background=self.background,
            limits=settings.stream_limits,
            paid=self.paid,
        )
        self.infer_stream = InferStream(
            keys=keys,
            intake=self.intake,
            planner=self.planner,
            claims=self.claims,
            relay=self.relay,
            failures=self.failures,
            metrics=self.metrics,
            offloader=self.federation,
            paid=self.paid,
        )
        self.discovery = Discovery(registry, self.endpoints, settings.registry_limits)
        self.quotes = Quotes(
            keys,
            self.intake,
            self.claims,
            pool,
            registry.tables,
            self.policy,
            self.fees,
            settings.quote_ttl_s,
            offload=self.paid_offload,
        )
        self.registration = Registration(
            keys, self.intake, self.claims, registry, self.endpoints, settings.registry_limits
        )
        self.manifests = Manifests(
            keys, self.intake, self.claims, pool, registry, settings.max_request_bytes, settings.clock_skew_s
        )
        self.auth = Authenticator(
            self.claims,
            self.limiter,
            settings.public_url,
            settings.nip98_window_s,
            self.api_keys,
            settings.client_allowlist,
            settings.client_blocklist,
        )
        self.operators = Operators(self.auth, self.failures, settings.admin_token_sha256, settings.admin_keys)
        self.openai = OpenAI(
            keys=keys,
            auth=self.auth,
            planner=self.planner,
            dispatcher=self.dispatcher,
            completion=self.completion,
            relay=self.relay,
            pool=pool,
            tables=registry.tables,
            policy=self.policy,
            failures=self.failures,
            metrics=self.metrics,
            max_request_bytes=settings.max_request_bytes,
            paid=self.paid,
            edge=self._edge_payments(),
            offload=self.paid_offload,
        )

    def _build_payments(self) -> None:
        """Payment requests and the paid path (docs/payments.md#the-flow), with the router's own wallet."""
        settings = self.settings
        self.payment_metrics = PaymentMetrics("router", self.metrics.registry)
        opened = open_wallet(settings.wallet, "ROUTER_WALLET") if settings.wallet else None
        self.wallet = None if opened is None else MeasuredWallet(opened, self.payment_metrics.observe_wallet)
        self.payment_store = PaymentStore(self.pool, self.database.payment_writer)
        self.client_wallets = ClientWallets(settings.api_key_wallets)
        self.edge_refunds: EdgeRefunds | None = None  # refund links of paid OpenAI calls (GET /refunds/lnurlp/…)
        if settings.require_payment and offers_links(settings.public_url, settings.edge_refunds):
            self.edge_refunds = EdgeRefunds(self.pool, self.client_wallets, settings.public_url or "")
        self.payment_requests = PaymentRequests(
            keys=self.keys,
            intake=self.intake,
            claims=self.claims,
            pool=self.pool,
            store=self.payment_store,
            wallet=self.wallet,
            outbound=self.outbound,
            nodes=self.registry.nodes,
            settings=PaySettings(settings.ln_network, settings.payment_ttl_s, settings.node_timeout_ms / 1000),
        )
        enabled = settings.require_payment or self.wallet is not None
        self.paid = Paid(self.payment_store, self.payment_requests, required=settings.require_payment, enabled=enabled)
        self.paid.settlement = RouterSettlement(
            self.pool,
            self.wallet,
            self.outbound,
            self.payment_metrics,
            settings.settlement,
            fee=self.fees,
            network=settings.ln_network,
            allow_http=settings.allow_private_endpoints,
            background=self.background,
        )

    def _paid_offload(self) -> PaidOffload | None:
        """A paying router lets clients pay for work a peer router does (docs/payments.md#federation-settlement)."""
        if not self.paid.enabled:
            return None
        offload = PaidOffload(
            offloader=self.federation,
            pool=self.pool,
            fees=self.fees,
            quote_ttl_s=self.settings.quote_ttl_s,
            planner=self.planner,
            claims=self.claims,
        )
        self.payment_requests.offload = offload
        return offload

    def _edge_payments(self) -> EdgePayments | None:
        """A paying router pays OpenAI calls from the callers' bound wallets (docs/payments.md#the-openai-edge)."""
        if not self.settings.require_payment:
            return None
        return EdgePayments(
            issue=self.quotes.issue,
            requests=self.payment_requests,
            wallets=self.client_wallets,
            pool=self.pool,
            refunds=self.edge_refunds,
            return_fee=None if self.paid.settlement is None else self.paid.settlement.return_fee,
        )

    def _ops(self) -> Ops:
        return Ops(
            pubkey=self.pubkey,
            version=self.version,
            started_at=self.started_at,
            pool=self.pool,
            relays=self.relays,
            nodes=self.registry.nodes,
            tables=self.registry.tables,
            counts=self.node_counts,
            federation=self.federation,
            policy=self.policy,
            operators=self.operators,
            metrics=self.metrics.registry,
            metrics_public=self.settings.metrics_public,
            drain=self.drain,
        )

    async def _start_admin(self) -> None:
        """Operators' run-time changes (runbooks/admin.md): applied now, then whenever the audit log moves."""
        pool = self.pool
        self.admin_state = AdminState(pool, self.registry, self.federation.peers.policy, self.api_keys, self.fees)
        await self.admin_state.reload()
        self.background.every(self.settings.admin_sync_ms / 1000, "admin sync", self.admin_state.sync)
        self.admin_api = AdminApi(
            operators=self.operators,
            state=self.admin_state,
            pool=pool,
            nodes=self.registry.nodes,
            federation=self.federation,
            policy=self.policy,
        )
        self.dashboard = Dashboard(
            operators=self.operators,
            state=self.admin_state,
            ops=self.ops,
            sessions=Sessions(self.keys.secret_hex),
            public_url=self.settings.public_url or "",
        )

    def _every_loop(self) -> None:
        """The background loops every replica runs."""
        settings, registry, every = self.settings, self.registry, self.background.every
        every(settings.registry_refresh_ms / 1000, "registry refresh", self._refresh)
        every(NONCE_PRUNE_INTERVAL_S, "nonce prune", self.replay.prune)
        every(STATS_INTERVAL_S, "health window exchange", registry.exchange_stats)
        every(STATS_PRUNE_INTERVAL_S, "health window prune", self._prune_stats)
        self.housekeeper = Housekeeper(self.pool, registry, settings.retention, self.metrics.registry)
        every(settings.retention.interval_s, "housekeeping", self.housekeeper.run)
        assert self.paid.settlement is not None
        every(settings.settlement.interval_s, "payment reconciliation", self.paid.settlement.reconciler.run)

    async def _open_relays(self) -> RelayPool:
        settings = self.settings
        relays = RelayPool(
            settings.relays,
            auth_keys=self.keys,
            max_event_bytes=settings.max_request_bytes,
            author_budget=(settings.peer_rate, 60.0),  # ROUTER_PEER_RATE: events per author and minute
        )
        await relays.start()
        self.metrics.registry.register(RelayPoolCollector(relays))  # relays configured, connected, reconnects
        return relays

    async def stop(self) -> None:
        await self.background.stop()
        await self.federation.stop()
        if self.relays is not None:
            await self.relays.close()
        await self.outbound.close()
        if self.wallet is not None:
            await self.wallet.aclose()
        await self.client_wallets.aclose()
        await self.database.close()

    async def _prune_stats(self) -> None:
        await prune_stats(self.pool, 2 * WINDOW_MINUTES)

    async def _refresh(self) -> None:
        try:
            await self.registry.refresh()
        finally:
            self.node_counts.update()
