"""The node's ASGI app, and the one place its parts are built and wired together.

Routes: the router-only, signed `POST /infer` (`fedai_node.infer`), `POST /infer/stream` and
`POST /infer/cancel` (`fedai_node.streaming`), `POST /invoice` (`fedai_node.payments`); `GET /health`,
`/metrics` and `/descriptor` (`fedai_node.status`); with NODE_ADMIN_KEYS, `/admin/api/…` (`fedai_node.admin_api`).
Background work (replay store, model discovery, heartbeats, announcements) is `fedai_node.lifecycle`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.observability.tracing import request_spans
from fedai.payments.config import open_wallet
from fedai.payments.measured import MeasuredWallet
from fedai.protocol.event import Event
from fedai.protocol.messages import NodeDescriptor
from fedai.service.drain import OPS_PATHS, Drain, DrainGate
from fedai_node.admin_api import PREFIX as ADMIN_PREFIX
from fedai_node.admin_api import NodeAdminApi
from fedai_node.admin_store import load_snapshot
from fedai_node.admission import Admission
from fedai_node.catalog import ModelCatalog
from fedai_node.config import NodeSettings
from fedai_node.descriptor import announce_event, build_descriptor, pricing
from fedai_node.infer import InferEndpoint
from fedai_node.lifecycle import NodeLifecycle
from fedai_node.limits import Limits
from fedai_node.metrics import NodeMetrics
from fedai_node.payments import NodePayments
from fedai_node.prices import NodePrices
from fedai_node.reply import ReplySigner
from fedai_node.runners import Runner, make_runner
from fedai_node.settlement import NodeSettlement
from fedai_node.status import StatusEndpoints
from fedai_node.streaming import StreamEndpoints
from fedai_node.trusted_routers import TrustedRouters

if TYPE_CHECKING:
    import asyncpg

# answered while draining: the ops paths, and cancels of streams in flight (they end a stream, never start one)
DRAIN_EXEMPT = OPS_PATHS | {"/infer/cancel"}


@dataclass(frozen=True, slots=True)
class Node:
    """One node's parts, built from its settings by `build_node`."""

    settings: NodeSettings
    runner: Runner
    catalog: ModelCatalog
    metrics: NodeMetrics
    admission: Admission
    infer: InferEndpoint
    streams: StreamEndpoints
    status: StatusEndpoints
    lifecycle: NodeLifecycle
    payments: NodePayments
    drain: Drain
    admin_api: NodeAdminApi | None = None  # with NODE_ADMIN_KEYS


def build_node(settings: NodeSettings, runner: Runner | None = None) -> Node:
    """Build every part and give each the collaborators it uses. A `runner` passed in stays the caller's to
    close; one built here from `settings.runner_spec` is closed when the node stops."""
    owns_runner = runner is None
    runner = runner if runner is not None else make_runner(settings.runner_spec)
    keys = settings.keys
    metrics = NodeMetrics()
    catalog = ModelCatalog(runner, settings.model_id, settings.model_aliases)
    prices = NodePrices(pricing(settings))  # NODE_PRICE_*, or per model the admin API's
    trusted = TrustedRouters(settings.router_pubkeys)  # ROUTER_PUBLIC_KEY, with the admin API's rules
    admission = Admission(
        pubkey=keys.pubkey,
        routers=trusted,
        max_request_bytes=settings.max_request_bytes,
        skew_s=settings.clock_skew_s,
        catalog=catalog,
        limits=Limits(settings.max_prompt_bytes, settings.max_tokens, frozenset(settings.job_types)),
        capacity=settings.capacity_max,
        in_flight_gauge=metrics.in_flight,
        prices=prices,
    )
    signer = ReplySigner(keys, prices)
    payment_metrics = PaymentMetrics("node", metrics.registry)
    opened = open_wallet(settings.wallet, "NODE_WALLET") if settings.wallet else None
    wallet = None if opened is None else MeasuredWallet(opened, payment_metrics.observe_wallet)
    payments = NodePayments(keys, admission, wallet, network=settings.ln_network, required=settings.require_payment)
    drain = Drain(settings.drain_timeout_s)  # SIGTERM: routers told, new requests refused, streams finished
    payments.settlement = NodeSettlement(settings.refunds, payment_metrics, network=settings.ln_network)

    def describe() -> NodeDescriptor:
        in_flight = admission.in_flight.count
        return build_descriptor(
            settings,
            catalog.served(),
            in_flight,
            catalog.latency_ms,
            catalog.primary,
            draining=drain.draining,
            prices=prices,
        )

    def announce() -> Event:
        return announce_event(keys, describe())

    async def apply_admin(pool: asyncpg.Pool) -> None:
        """The admin API's stored changes, applied at start before any heartbeat (runbooks/admin.md#node)."""
        snapshot = await load_snapshot(pool, keys.pubkey)
        prices.load(snapshot.prices)
        trusted.apply(snapshot.routers)
        drain.draining = snapshot.drained  # an operator's drain outlives a restart; heartbeats say it

    timeout_ms = settings.runner_timeout_ms
    streams = StreamEndpoints(
        admission=admission,
        runner=runner,
        catalog=catalog,
        signer=signer,
        metrics=metrics,
        limits=settings.stream_limits,
        timeout_ms=timeout_ms,
        payments=payments,
    )
    lifecycle = NodeLifecycle(
        settings,
        runner=runner,
        owns_runner=owns_runner,
        catalog=catalog,
        admission=admission,
        metrics=metrics,
        describe=describe,
        announce=announce,
        payments=payments,
        trusted=trusted,
        admin=apply_admin if settings.admin_keys else None,
        payment_metrics=payment_metrics,
    )
    drain.on_drain(lifecycle.leaving)
    drain.on_resume(lambda: tell(lifecycle))
    admin_api = None
    if settings.admin_keys:
        admin_api = NodeAdminApi(
            settings=settings,
            runner=runner,
            catalog=catalog,
            admission=admission,
            lifecycle=lifecycle,
            prices=prices,
            trusted=trusted,
            drain=drain,
        )
    return Node(
        settings=settings,
        runner=runner,
        catalog=catalog,
        metrics=metrics,
        admission=admission,
        infer=InferEndpoint(
            admission=admission,
            runner=runner,
            catalog=catalog,
            signer=signer,
            metrics=metrics,
            timeout_ms=timeout_ms,
            payments=payments,
        ),
        streams=streams,
        status=StatusEndpoints(
            pubkey=keys.pubkey,
            runner=runner,
            catalog=catalog,
            in_flight=admission.in_flight,
            streams=streams.live,
            metrics=metrics,
            announce=announce,
        ),
        lifecycle=lifecycle,
        payments=payments,
        drain=drain,
        admin_api=admin_api,
    )


async def tell(lifecycle: NodeLifecycle) -> None:
    await lifecycle.tell_routers()


def create_app(settings: NodeSettings, runner: Runner | None = None) -> Starlette:
    """The node's ASGI app. A `runner` passed in stays the caller's to close; one built here is closed here."""
    node = build_node(settings, runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await node.lifecycle.start()
            yield
        finally:
            await node.lifecycle.stop()  # also after a failed start: it releases whatever was opened

    admin_routes = node.admin_api.routes() if node.admin_api is not None else []
    app = Starlette(
        routes=[
            *admin_routes,
            Route("/infer", node.infer.serve, methods=["POST"]),
            Route("/infer/stream", node.streams.open, methods=["POST"]),
            Route("/invoice", node.payments.invoice, methods=["POST"]),
            Route("/infer/cancel", node.streams.cancel, methods=["POST"]),
            Route("/health", node.status.health, methods=["GET"]),
            Route("/metrics", node.status.metrics, methods=["GET"]),
            Route("/descriptor", node.status.descriptor, methods=["GET"]),
        ],
        # a span per request only while tracing is on; on SIGTERM (run_service) the drain: fedai.service.drain
        middleware=[
            *request_spans("node.request"),
            Middleware(DrainGate, drain=node.drain, exempt=DRAIN_EXEMPT, exempt_prefixes=(ADMIN_PREFIX,)),
        ],
        lifespan=lifespan,
    )
    app.state.node = node
    app.state.drain = node.drain
    return app
