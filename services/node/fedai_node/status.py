"""What the node says about itself: `GET /health`, `GET /metrics` and `GET /descriptor`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sized

from starlette.requests import Request
from starlette.responses import Response

import fedai
from fedai.observability.metrics import metrics_response
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.service.http import error_response, event_response, json_response
from fedai_node.catalog import NOT_READY_RETRY_MS, ModelCatalog
from fedai_node.limits import InFlight
from fedai_node.metrics import NodeMetrics
from fedai_node.runners.base import Runner

log = logging.getLogger("fedai_node")

HEALTH_TIMEOUT_S = 2.0


class StatusEndpoints:
    """Readiness (models listed and the runner healthy), the Prometheus metrics, and the signed descriptor."""

    def __init__(
        self,
        *,
        pubkey: str,
        runner: Runner,
        catalog: ModelCatalog,
        in_flight: InFlight,
        streams: Sized,
        metrics: NodeMetrics,
        announce: Callable[[], Event],
    ) -> None:
        self._pubkey = pubkey
        self._runner = runner
        self._catalog = catalog
        self._in_flight = in_flight
        self._streams = streams
        self._metrics = metrics
        self._announce = announce

    async def health(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                runner_ok = await self._runner.health()
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"; the type is logged
            log.warning("runner health check failed", extra={"error_type": type(exc).__name__})
            runner_ok = False
        models = self._catalog.ready
        ready = models and runner_ok
        body = {
            "status": "ok" if ready else ("degraded" if models else "starting"),
            "ready": ready,
            "pubkey": self._pubkey,
            "version": fedai.__version__,
            "runner": self._runner.name,
            "runner_ok": runner_ok,
            "models": sorted(m.id for m in self._catalog.served()),
            "in_flight": self._in_flight.count,
            "streams": len(self._streams),
            "capacity": self._in_flight.limit,
        }
        response = json_response(body, 200 if ready else 503)
        if not ready:
            response.headers["Retry-After"] = "5"
        return response

    async def metrics(self, request: Request) -> Response:
        self._metrics.in_flight.set(self._in_flight.count)
        return metrics_response(self._metrics.registry)

    async def descriptor(self, request: Request) -> Response:
        if not self._catalog.ready:
            return error_response(
                FedaiError(ErrorCode.NO_CAPACITY, "node is not ready: no models yet", NOT_READY_RETRY_MS)
            )
        return event_response(self._announce())
