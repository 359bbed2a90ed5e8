"""`POST /infer`: admit a router's signed request, run it to completion, answer the node-signed reply."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fedai.observability.tracing import annotate, span
from fedai.protocol.messages import InferenceRequest
from fedai.service.http import JSON
from fedai_node.admission import Admission
from fedai_node.catalog import ModelCatalog
from fedai_node.metrics import NodeMetrics
from fedai_node.payments import Held, NodePayments
from fedai_node.reply import ReplySigner
from fedai_node.runners.base import Runner, RunnerError, RunnerResult
from fedai_node.serving import Admitted, failure_response, runner_failure, timeout_error

log = logging.getLogger("fedai_node")


class InferEndpoint:
    """One request, one answer: the runner runs under NODE_RUNNER_TIMEOUT_MS while the request holds a slot."""

    def __init__(
        self,
        *,
        admission: Admission,
        runner: Runner,
        catalog: ModelCatalog,
        signer: ReplySigner,
        metrics: NodeMetrics,
        timeout_ms: int,
        payments: NodePayments,
    ) -> None:
        self._admission = admission
        self._runner = runner
        self._catalog = catalog
        self._signer = signer
        self._metrics = metrics
        self._timeout_ms = timeout_ms
        self._payments = payments

    async def serve(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {"request": "-", "model": "-"}
        try:
            admitted = await self._admission.admit(request, started, fields, streaming=False)
            try:
                result, latency_ms, held = await self._paid_run(admitted)
            finally:
                self._admission.release()
            self._catalog.observe_latency(admitted.req.model, latency_ms)
            self._metrics.count_usage(result)
            statement = self._payments.statement(held, self._signer.price(admitted, result))
            reply = self._signer.reply(admitted, result, latency_ms, statement)
            await self._payments.after_answer(held, statement)
            fields.update(input_tokens=result.input_tokens, output_tokens=result.output_tokens)
            response, code = Response(reply, media_type=JSON), "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is answered with its code
            response, code = failure_response(exc, self._timeout_ms, fields)
        wall = time.perf_counter() - started
        self._metrics.requests.labels(code).inc()
        self._metrics.request_seconds.observe(wall)
        log.info(
            "infer", extra={**fields, "status": response.status_code, "code": code, "wall_ms": round(wall * 1000, 2)}
        )
        return response

    async def _paid_run(self, admitted: Admitted) -> tuple[RunnerResult, float, Held | None]:
        """Run the request, its payment (when it carries one) claimed first: consumed once the runner answered,
        released when it failed, so the same proof serves a retry (docs/payments.md#the-flow)."""
        held = await self._payments.hold(admitted)
        try:
            result = await self._run(admitted.req)
        except BaseException:
            await self._payments.settle(held, served=False)
            raise
        await self._payments.settle(held, served=True)
        return (*result, held)

    async def _run(self, req: InferenceRequest) -> tuple[RunnerResult, float]:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_ms / 1000):
                with span("node.runner", {"fedai.runner": self._runner.name, "fedai.model": req.model}):
                    result = await self._runner.infer(req)
                    annotate({"fedai.tokens.input": result.input_tokens, "fedai.tokens.output": result.output_tokens})
        except TimeoutError:
            raise timeout_error(self._timeout_ms) from None
        except RunnerError as exc:
            raise runner_failure(exc) from None
        return result, (time.perf_counter() - t0) * 1000
