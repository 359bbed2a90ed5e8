"""The node's HTTP service: router-only, signed `/infer`, `/infer/stream` and `/infer/cancel`, plus `/health`,
`/metrics` and `/descriptor`. Streaming itself lives in `fedai_node.streaming`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import fedai
from fedai.observability.metrics import metrics_response
from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, InferenceResponse, NodeDescriptor, NodeReply, Usage
from fedai.protocol.replay import MemoryReplayGuard, ReplayGuard, claim_or_raise
from fedai.service.http import JSON, error_response, event_response, json_response, read_body
from fedai.service.tasks import cancel_and_wait
from fedai_node.announce import Announcer
from fedai_node.config import NodeSettings, log_summary
from fedai_node.descriptor import announce_event, build_descriptor, pricing
from fedai_node.heartbeat import BeatResult, Heartbeat
from fedai_node.limits import InFlight, Limits, check_request
from fedai_node.metering import build_record
from fedai_node.metrics import NodeMetrics
from fedai_node.runners import Runner, RunnerError, RunnerModel, RunnerResult, make_runner
from fedai_node.serving import Admitted, runner_failure, timeout_error
from fedai_node.streaming import StreamRegistry, cancel_stream, open_stream

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("fedai_node")

HEALTH_TIMEOUT_S = 2.0
LATENCY_EWMA = 0.2  # weight of the newest sample in the advertised latency estimate
NOT_READY_RETRY_MS = 5000
DISCOVERY_FIRST_S = 0.25  # retry model discovery after this long, doubling up to DISCOVERY_MAX_S
DISCOVERY_MAX_S = 5.0
_INFER_KINDS = frozenset({Kind.INFER_REQUEST})
_encode = msgspec.json.Encoder().encode


class NodeService:
    """Everything one node process holds: keys, runner, limits, replay guard, metrics, background loops."""

    def __init__(self, settings: NodeSettings, runner: Runner | None = None) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.runner = runner if runner is not None else make_runner(settings)
        self._owns_runner = runner is None
        self.metrics = NodeMetrics()
        self.in_flight = InFlight(settings.capacity_max)
        self.limits = Limits(settings.max_prompt_bytes, settings.max_tokens, frozenset(settings.job_types))
        self.pricing = pricing(settings)
        self.guard: ReplayGuard = MemoryReplayGuard()
        self.models: dict[str, RunnerModel] = {}  # empty until the runner has listed its models: not ready
        self.primary_model: str | None = None
        self.latency_ms: dict[str, float] = {}
        self.streams = StreamRegistry()
        self.session: aiohttp.ClientSession | None = None
        self.heartbeat: Heartbeat | None = None
        self.announcer: Announcer | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._db: asyncpg.Pool | None = None
        self.timeout_s = settings.runner_timeout_ms / 1000

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        log_summary(s, log)
        if s.db_url:
            from fedai.store import PostgresReplayGuard, create_pool, migrate_dsn

            await migrate_dsn(s.db_url)
            self._db = await create_pool(s.db_url, min_size=1, max_size=4)
            self.guard = PostgresReplayGuard(self._db)
        self.session = aiohttp.ClientSession()
        if await self._try_load_models():
            await self._start_loops()
        else:  # the runner is down or loading: serve /health (503) and keep trying
            self._discovery = asyncio.create_task(self._discover(), name="fedai-node-discovery")

    async def _start_loops(self) -> None:
        """Heartbeats and announcements begin once the node knows what it serves."""
        s = self.settings
        assert self.session is not None
        self.heartbeat = Heartbeat(
            keys=self.keys,
            endpoints=s.router_endpoints,
            trusted=s.router_pubkeys,
            interval_ms=s.heartbeat_ms,
            skew_s=s.clock_skew_s,
            session=self.session,
            describe=self.descriptor,
            on_result=self._count_beat,
        )
        self.heartbeat.start()
        if s.relays:
            self.announcer = Announcer(
                keys=self.keys,
                relays=s.relays,
                interval_s=s.announce_s,
                build=self.announce_event,
                on_result=lambda result: self.metrics.announces.labels(result).inc(),
            )
            await self.announcer.start()

    async def _discover(self) -> None:
        delay = DISCOVERY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            if await self._try_load_models():
                await self._start_loops()
                return
            delay = min(delay * 2, DISCOVERY_MAX_S)

    async def stop(self) -> None:
        await cancel_and_wait([self._discovery])
        if self.announcer is not None:
            await self.announcer.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.session is not None:
            await self.session.close()
        if self._db is not None:
            await self._db.close()
        if self._owns_runner:
            await self.runner.close()

    async def _try_load_models(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.load_models()
        except RunnerError as exc:  # its message names no content: safe to log
            log.warning("runner not ready", extra={"runner": self.runner.name, "code": exc.code.value,
                                                   "reason": str(exc)})  # fmt: skip
            return False
        except Exception as exc:  # noqa: BLE001 - keep trying; log the type only
            log.warning("runner not ready", extra={"runner": self.runner.name, "error_type": type(exc).__name__})
            return False
        log.info("runner ready", extra={"runner": self.runner.name, "models": sorted(self.models)})
        return True

    async def load_models(self) -> None:
        models = await self.runner.list_models()
        if not models:
            raise RunnerError(f"runner {self.runner.name!r} serves no models")
        served = {m.id: m for m in models}
        primary = self.settings.model_id if self.settings.model_id in served else models[0].id
        for alias in self.settings.model_aliases:  # a request may name the model by an alias
            served.setdefault(alias, served[primary])
        self.latency_ms = {m.id: await self._probe_latency(m) for m in models}
        self.models, self.primary_model = served, primary

    async def _probe_latency(self, model: RunnerModel) -> float:
        probe = InferenceRequest(model=model.id, prompt="", max_tokens=1)
        try:
            return (await self.runner.estimate(probe)).latency_ms
        except RunnerError:
            return 0.0  # learnt from real requests instead

    def _count_beat(self, result: BeatResult) -> None:
        self.metrics.heartbeats.labels(result.value).inc()

    # ---- descriptor ------------------------------------------------------------------------------

    def descriptor(self) -> NodeDescriptor:
        served = list({m.id: m for m in self.models.values()}.values())
        return build_descriptor(self.settings, served, self.in_flight.count, self.latency_ms, self.primary_model)

    def announce_event(self) -> Event:
        return announce_event(self.keys, self.descriptor())

    # ---- admission: the checks both /infer and /infer/stream run before any work ------------------

    async def admit(self, request: Request, started: float, fields: dict[str, Any], *, streaming: bool) -> Admitted:
        """Envelope, readiness, limits, capacity slot, then the replay claim. Raises `FedaiError`; on success the
        caller owns one capacity slot."""
        body = await read_body(request, self.settings.max_request_bytes)
        opened = open_envelope(
            body,
            InferenceRequest,
            kinds=_INFER_KINDS,
            recipient=self.keys.pubkey,
            signers=self.settings.router_pubkeys,
            max_bytes=self.settings.max_request_bytes,
            skew_s=self.settings.clock_skew_s,
        )
        fields.update(request=opened.event.id[:12], model=opened.payload.model)
        if not self.models:
            raise FedaiError(
                ErrorCode.NO_CAPACITY, "node is not ready: its runner is down or loading", NOT_READY_RETRY_MS
            )
        model = check_request(opened.payload, self.models, self.limits, streaming=streaming)
        req = opened.payload
        if req.model != model.id:
            req = msgspec.structs.replace(req, model=model.id)
        # Take the slot before claiming the id, so a request refused for capacity can be sent again as is.
        self.acquire()
        try:
            await claim_or_raise(self.guard, opened.event, self.settings.clock_skew_s)
        except BaseException:
            self.release()
            raise
        return Admitted(opened.event, req, len(body), started)

    def acquire(self) -> None:
        self.in_flight.acquire()
        self.metrics.in_flight.set(self.in_flight.count)

    def release(self) -> None:
        self.in_flight.release()
        self.metrics.in_flight.set(self.in_flight.count)

    def sign_reply(self, admitted: Admitted, result: RunnerResult, latency_ms: float) -> bytes:
        """The node-signed infer.response and metering record for `result`, as `NodeReply` JSON."""
        event, req = admitted.event, admitted.req
        answer = InferenceResponse(
            model=req.model,
            output=result.output,
            finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
            latency_ms=round(latency_ms, 3),
        )
        response = seal(self.keys, Kind.INFER_RESPONSE, answer, to=event.pubkey, reply_to=event.id)
        record = build_record(
            request=event,
            req=req,
            response=response,
            result=result,
            pricing=self.pricing,
            wall_ms=(time.perf_counter() - admitted.started) * 1000,
            bytes_in=admitted.bytes_in,
        )
        metering = seal(self.keys, Kind.METERING_RECORD, record, to=event.pubkey, reply_to=event.id)
        return _encode(NodeReply(response=response, metering=metering))

    def meter(self, result: RunnerResult) -> None:
        """Count a served (or partly served) request's tokens in the metrics."""
        self.metrics.tokens.labels("in").inc(result.input_tokens)
        self.metrics.tokens.labels("out").inc(result.output_tokens)

    def observe_latency(self, model: str, latency_ms: float) -> None:
        previous = self.latency_ms.get(model)
        self.latency_ms[model] = (
            latency_ms if not previous else (1 - LATENCY_EWMA) * previous + LATENCY_EWMA * latency_ms
        )

    # ---- /infer ----------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {"request": "-", "model": "-"}
        try:
            admitted = await self.admit(request, started, fields, streaming=False)
            try:
                result, latency_ms = await self._run(admitted.req)
            finally:
                self.release()
            self.observe_latency(admitted.req.model, latency_ms)
            self.meter(result)
            reply = self.sign_reply(admitted, result, latency_ms)
            fields.update(input_tokens=result.input_tokens, output_tokens=result.output_tokens)
            response = Response(reply, media_type=JSON)
            code = "ok"
        except FedaiError as err:
            response, code = error_response(err), err.code.value
        except Exception as exc:  # noqa: BLE001 - answer `internal`, log the type only (messages may carry data)
            log.error("infer failed", extra={**fields, "error_type": type(exc).__name__})
            response, code = error_response(FedaiError(ErrorCode.INTERNAL, "internal error")), "internal"
        wall = time.perf_counter() - started
        self.metrics.requests.labels(code).inc()
        self.metrics.request_seconds.observe(wall)
        log.info(
            "infer", extra={**fields, "status": response.status_code, "code": code, "wall_ms": round(wall * 1000, 2)}
        )
        return response

    async def _run(self, req: InferenceRequest) -> tuple[RunnerResult, float]:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self.runner.infer(req)
        except TimeoutError:
            raise timeout_error(self.settings.runner_timeout_ms) from None
        except RunnerError as exc:
            raise runner_failure(exc) from None
        return result, (time.perf_counter() - t0) * 1000

    # ---- /infer/stream and /infer/cancel -------------------------------------------------------------

    async def infer_stream(self, request: Request) -> Response:
        return await open_stream(self, request)

    async def infer_cancel(self, request: Request) -> Response:
        return await cancel_stream(self, request)

    # ---- other routes ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                runner_ok = await self.runner.health()
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"; the type is logged
            log.warning("runner health check failed", extra={"error_type": type(exc).__name__})
            runner_ok = False
        ready = bool(self.models) and runner_ok
        body = {
            "status": "ok" if ready else ("degraded" if self.models else "starting"),
            "ready": ready,
            "pubkey": self.keys.pubkey,
            "version": fedai.__version__,
            "runner": self.runner.name,
            "runner_ok": runner_ok,
            "models": sorted({m.id for m in self.models.values()}),
            "in_flight": self.in_flight.count,
            "streams": len(self.streams),
            "capacity": self.settings.capacity_max,
        }
        response = json_response(body, 200 if ready else 503)
        if not ready:
            response.headers["Retry-After"] = "5"
        return response

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.in_flight.set(self.in_flight.count)
        return metrics_response(self.metrics.registry)

    async def descriptor_endpoint(self, request: Request) -> Response:
        if not self.models:
            return error_response(
                FedaiError(ErrorCode.NO_CAPACITY, "node is not ready: no models yet", NOT_READY_RETRY_MS)
            )
        return event_response(self.announce_event())


def create_app(settings: NodeSettings, runner: Runner | None = None) -> Starlette:
    """The node's ASGI app. A `runner` passed in stays the caller's to close; one built here is closed here."""
    service = NodeService(settings, runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await service.start()
            yield
        finally:
            await service.stop()  # also after a failed start: it releases whatever was opened

    app = Starlette(
        routes=[
            Route("/infer", service.infer, methods=["POST"]),
            Route("/infer/stream", service.infer_stream, methods=["POST"]),
            Route("/infer/cancel", service.infer_cancel, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
            Route("/metrics", service.metrics_endpoint, methods=["GET"]),
            Route("/descriptor", service.descriptor_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.node = service
    return app
