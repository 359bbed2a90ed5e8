"""The router's HTTP surface (Starlette): every route, the wrapper that guards signed endpoints, and the
per-address limit in front of all of them. The handlers are built by `RouterService` (service.py) with what
each one uses; the routes are mounted once it has started (they need its database).

A request, top-down: POST /infer → `Infer.handle` (infer.py: open the envelope, plan, dispatch, complete) →
`Planner.plan` (planning.py: quote, ranking) → `Dispatcher.serve` (dispatch.py: failover over the ranked nodes)
→ `Outbound.exchange` (outbound.py: the node call) → `verify_reply` (verify.py) → `Completion.answer`
(completion.py: store the metering, sign the answer) → back here as the signed event."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fedai.observability.tracing import request_spans
from fedai.protocol.event import Event
from fedai.service.drain import DrainGate
from fedai.service.http import error_response, event_response, read_body
from fedai_router.address import AddressLimit, client_address, rate_key
from fedai_router.config import RouterSettings
from fedai_router.failure import Failures
from fedai_router.metrics import RouterMetrics
from fedai_router.openai_api.edge_refunds import PATH
from fedai_router.payment_status import PaymentStatus
from fedai_router.service import RouterService

Handler = Callable[[bytes], Awaitable[Event]]
SourcedHandler = Callable[[bytes, str], Awaitable[Event]]  # also given the caller's address
Endpoint = Callable[[Request], Awaitable[Response]]


class Signed:
    """Wraps the handlers of signed events: bounded body, typed errors, metrics per route and outcome."""

    def __init__(self, settings: RouterSettings, metrics: RouterMetrics, failures: Failures) -> None:
        self.settings = settings  # the body bound, and the trusted proxies for a caller's address
        self.metrics = metrics
        self.failures = failures

    def __call__(self, route: str, handler: Handler) -> Endpoint:
        return self._guard(route, lambda _request, body: handler(body))

    def sourced(self, route: str, handler: SourcedHandler) -> Endpoint:
        """`handler` is also given the caller's source address (`client_address`)."""
        settings = self.settings
        return self._guard(route, lambda request, body: handler(body, rate_key(client_address(request, settings))))

    def _guard(self, route: str, handle: Callable[[Request, bytes], Awaitable[Event]]) -> Endpoint:
        latency = self.metrics.latency.labels(route)
        ok = self.metrics.requests.labels(route, "ok")
        settings, failures = self.settings, self.failures

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                body = await read_body(request, settings.max_request_bytes)
                response = event_response(await handle(request, body))
                ok.inc()
            except Exception as exc:  # noqa: BLE001 - FedaiError as is, a database outage a typed 503, a bug a 500
                response = error_response(failures.refused(route, exc))
            latency.observe(time.perf_counter() - started)
            return response

        return endpoint


def routes(svc: RouterService) -> list[BaseRoute]:
    signed = Signed(svc.settings, svc.metrics, svc.failures)
    ops, openai = svc.ops, svc.openai
    chat, text = partial(openai.complete, kind="chat"), partial(openai.complete, kind="text")
    return [
        Route("/infer", signed("infer", svc.infer.handle), methods=["POST"]),
        Route("/pay", signed("pay", svc.payment_requests.handle), methods=["POST"]),
        Route("/payments/{payment_id}", PaymentStatus(svc.pool, svc.auth, svc.failures).handle, methods=["GET"]),
        Route("/infer/stream", svc.infer_stream.handle, methods=["POST"]),
        Route("/quote", signed("quote", svc.quotes.handle), methods=["POST"]),
        Route("/federation/job", signed("federation_job", svc.federation.handle_job), methods=["POST"]),
        Route("/federation/invoice", signed("federation_invoice", svc.federation.handle_invoice), methods=["POST"]),
        Route("/register-node", signed.sourced("register", svc.registration.handle), methods=["POST"]),
        Route("/manifest", signed("manifest", svc.manifests.handle), methods=["POST"]),
        Route("/health", ops.health, methods=["GET"]),
        Route("/ready", ops.ready, methods=["GET"]),
        Route("/status", ops.status, methods=["GET"]),
        Route("/metrics", ops.metrics_page, methods=["GET"]),
        Route("/route/explain", ops.route_explain, methods=["GET"]),
        Route("/federation/peers", ops.federation_peers, methods=["GET"]),
        Route("/v1/models", openai.models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", text, methods=["POST"]),
        Route("/v1/chains/{chain_id}", openai.chain, methods=["GET"]),
        *edge_refund_routes(svc),
        *svc.admin_api.routes(),
        *svc.dashboard.routes(),
    ]


def edge_refund_routes(svc: RouterService) -> list[BaseRoute]:
    """The LNURL-pay refund links of paid OpenAI calls (docs/payments.md#the-openai-edge), when offered."""
    links = svc.edge_refunds
    if links is None:
        return []
    return [
        Route(f"{PATH}/{{token}}", links.offer, methods=["GET"]),
        Route(f"{PATH}/{{token}}/callback", links.callback, methods=["GET"]),
    ]


def create_app(settings: RouterSettings) -> Starlette:
    svc = RouterService(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.start()
        app.router.routes[:] = routes(svc)
        try:
            yield
        finally:
            await svc.stop()

    # every route, ops and OpenAI ones included, is charged to its source address before anything else runs
    guards = [Middleware(AddressLimit, settings=settings, metrics=svc.metrics)]
    # on SIGTERM (run_service), new requests are refused and those in flight finish: fedai.service.drain
    guards.append(Middleware(DrainGate, drain=svc.drain))
    # a span per request (outermost, so a refused request is traced too) only while tracing is on
    app = Starlette(middleware=[*request_spans("router.request"), *guards], lifespan=lifespan)
    app.state.service = svc
    app.state.drain = svc.drain
    return app
