"""The router's HTTP surface (Starlette). Handlers live in their own modules; this file wires and guards them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedai.observability.metrics import metrics_response
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import npub
from fedai.service.http import error_response, event_response, json_response, read_body
from fedai_router.config import RouterSettings
from fedai_router.infer import handle_infer
from fedai_router.quotes import handle_quote
from fedai_router.registration import handle_register
from fedai_router.service import RouterService

log = logging.getLogger("fedai.router")

Handler = Callable[[RouterService, bytes], Awaitable[Event]]


def _signed_endpoint(svc: RouterService, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: bounded body, typed errors, metrics per route and outcome."""
    latency = svc.metrics.latency.labels(route)
    ok = svc.metrics.requests.labels(route, "ok")

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_body(request, svc.settings.max_request_bytes)
            response = event_response(await handler(svc, body))
            ok.inc()
        except FedaiError as err:
            response = _error(svc, route, err)
        except Exception as exc:  # noqa: BLE001 - any bug becomes a typed 500, never a traceback to the client
            log.error("unhandled error", extra={"route": route, "error": type(exc).__name__}, exc_info=False)
            response = _error(svc, route, FedaiError(ErrorCode.INTERNAL, "internal error"))
        latency.observe(time.perf_counter() - started)
        return response

    return endpoint


def _error(svc: RouterService, route: str, err: FedaiError) -> Response:
    svc.metrics.requests.labels(route, err.code.value).inc()
    svc.metrics.errors.labels(err.code.value).inc()
    return error_response(err)


def create_app(settings: RouterSettings) -> Starlette:
    svc = RouterService(settings)

    async def health(_: Request) -> Response:
        return json_response({"status": "ok", "pubkey": svc.pubkey, "npub": npub(svc.pubkey), "version": svc.version})

    async def ready(_: Request) -> Response:
        checks: dict[str, bool] = {}
        try:
            async with asyncio.timeout(2):
                checks["database"] = await svc.pool.fetchval("SELECT 1") == 1
        except (OSError, TimeoutError, asyncpg.PostgresError):
            checks["database"] = False
        if svc.relays is not None:
            checks["relays"] = svc.relays.connected > 0
        ready_now = all(checks.values())
        return json_response({"ready": ready_now, "checks": checks}, status=200 if ready_now else 503)

    async def status(_: Request) -> Response:
        now = time.time()
        nodes = [
            {
                "pubkey": n.pubkey,
                "endpoint": n.endpoint,
                "models": sorted(n.models),
                "verified": n.verified,
                "source": "heartbeat" if n.heartbeat else "announce",
                "fresh": svc.node_is_fresh(n.last_seen, n.heartbeat, now),
                "last_seen_s": round(now - n.last_seen, 1),
                "in_flight": n.in_flight,
                "load": n.load,
                "capacity": n.capacity,
                "cooldown_s": round(max(0.0, n.cooldown_until - now), 1),
            }
            for n in sorted(svc.registry.nodes.values(), key=lambda n: n.pubkey)
        ]
        return json_response(
            {
                "pubkey": svc.pubkey,
                "version": svc.version,
                "uptime_s": round(now - svc.started_at, 1),
                "nodes": nodes,
                "relays": svc.relays.status() if svc.relays is not None else {},
            }
        )

    async def metrics(_: Request) -> Response:
        svc.update_node_gauges()
        return metrics_response(svc.metrics.registry)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    routes = [
        Route("/infer", _signed_endpoint(svc, "infer", handle_infer), methods=["POST"]),
        Route("/quote", _signed_endpoint(svc, "quote", handle_quote), methods=["POST"]),
        Route("/register-node", _signed_endpoint(svc, "register", handle_register), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = svc
    return app
