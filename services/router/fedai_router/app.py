"""The router's HTTP surface (Starlette). Handlers live in their own modules; this file wires and guards them."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.service.http import error_response, event_response, read_body
from fedai_router import ops
from fedai_router.address import AddressLimit, client_address, rate_key
from fedai_router.config import RouterSettings
from fedai_router.failure import typed_failure
from fedai_router.federation.jobs import handle_job
from fedai_router.infer import handle_infer
from fedai_router.manifests import handle_manifest
from fedai_router.openai_api import routes as openai_routes
from fedai_router.quotes import handle_quote
from fedai_router.registration import handle_register
from fedai_router.service import RouterService
from fedai_router.streaming import handle_infer_stream

log = logging.getLogger("fedai.router")

Handler = Callable[[RouterService, bytes], Awaitable[Event]]
SourcedHandler = Callable[[RouterService, bytes, str], Awaitable[Event]]  # also given the caller's address


def _signed_endpoint(
    svc: RouterService, route: str, handler: Handler | None = None, *, sourced: SourcedHandler | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: bounded body, typed errors, metrics per route and outcome. A `sourced` handler is
    also given the caller's source address (`client_address`)."""
    latency = svc.metrics.latency.labels(route)
    ok = svc.metrics.requests.labels(route, "ok")

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_body(request, svc.settings.max_request_bytes)
            if sourced is not None:
                answer = await sourced(svc, body, rate_key(client_address(request, svc.settings)))
            else:
                assert handler is not None
                answer = await handler(svc, body)
            response = event_response(answer)
            ok.inc()
        except FedaiError as err:
            response = _error(svc, route, err)
        except Exception as exc:  # noqa: BLE001 - a database outage is a typed 503, a bug a typed 500
            response = _error(svc, route, typed_failure(exc, route))
        latency.observe(time.perf_counter() - started)
        return response

    return endpoint


def _error(svc: RouterService, route: str, err: FedaiError) -> Response:
    svc.metrics.requests.labels(route, err.code.value).inc()
    svc.metrics.errors.labels(err.code.value).inc()
    return error_response(err)


def create_app(settings: RouterSettings) -> Starlette:
    svc = RouterService(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    routes = [
        Route("/infer", _signed_endpoint(svc, "infer", handle_infer), methods=["POST"]),
        Route("/infer/stream", partial(handle_infer_stream, svc), methods=["POST"]),
        Route("/quote", _signed_endpoint(svc, "quote", handle_quote), methods=["POST"]),
        Route("/federation/job", _signed_endpoint(svc, "federation_job", handle_job), methods=["POST"]),
        Route("/register-node", _signed_endpoint(svc, "register", sourced=handle_register), methods=["POST"]),
        Route("/manifest", _signed_endpoint(svc, "manifest", handle_manifest), methods=["POST"]),
        Route("/health", partial(ops.health, svc), methods=["GET"]),
        Route("/ready", partial(ops.ready, svc), methods=["GET"]),
        Route("/status", partial(ops.status, svc), methods=["GET"]),
        Route("/metrics", partial(ops.metrics, svc), methods=["GET"]),
        Route("/route/explain", partial(ops.route_explain, svc), methods=["GET"]),
        Route("/federation/peers", partial(ops.federation_peers, svc), methods=["GET"]),
        Route("/v1/models", partial(openai_routes.models, svc), methods=["GET"]),
        Route("/v1/chat/completions", partial(openai_routes.complete, svc, kind="chat"), methods=["POST"]),
        Route("/v1/completions", partial(openai_routes.complete, svc, kind="text"), methods=["POST"]),
        Route("/v1/chains/{chain_id}", partial(openai_routes.chain, svc), methods=["GET"]),
    ]
    # every route, ops and OpenAI ones included, is charged to its source address before anything else runs
    guards = [Middleware(AddressLimit, settings=settings, metrics=svc.metrics)]
    app = Starlette(routes=routes, middleware=guards, lifespan=lifespan)
    app.state.service = svc
    return app
