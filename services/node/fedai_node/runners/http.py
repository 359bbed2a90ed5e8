"""The generic HTTP runner contract (`NODE_RUNNER=http`): a small JSON API any backend can implement.
docs/runners.md is the reference; in short, relative to `NODE_RUNNER_URL`:

- `GET /models` -> `{"models": [{"id": str, "context_window"?: int, "max_tokens"?: int}]}`
- `POST /infer` with `{"model", "prompt" | "messages", "max_tokens", "temperature"?, "top_p"?, "stop"?}`
  -> `{"output": str, "finish_reason": str, "usage"?: {"input_tokens": int, "output_tokens": int}}`
- `POST /infer/stream` (optional), same body -> `text/event-stream` of `data: {"delta": str}`, then
  `data: {"done": true, "finish_reason": str, "usage"?: {...}}`; `data: {"error": {...}}` ends it early.
  A server answering 404 or 405 there does not stream: the node then sends its whole answer as one chunk.
- `POST /estimate`, same body -> `{"input_tokens": int, "max_output_tokens": int, "latency_ms": number}`
  (optional; 404 -> a local estimate)
- `GET /health` -> 200 when ready
- errors: any non-200 status with `{"error": {"code": str, "message": str}}`.

Usage that a server leaves out is counted locally: input = prompt bytes / 4, output = deltas received (or
output bytes / 4 for a non-streamed answer), rounded up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from fedai.protocol.messages import InferenceRequest, estimate_tokens
from fedai_node.runners.base import Estimate, RunnerError, RunnerModel, RunnerResult, StreamItem, estimated_input_tokens
from fedai_node.runners.upstream import (
    MissingEndpoint,
    UpstreamRunner,
    chat_messages,
    count,
    select_models,
)

log = logging.getLogger("fedai_node.runners.http")


def _body(req: InferenceRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens}
    if req.messages is not None:
        body["messages"] = chat_messages(req)
    else:
        body["prompt"] = req.prompt
    for key in ("temperature", "top_p", "stop"):
        if (value := getattr(req, key)) is not None:
            body[key] = value
    return body


def _usage(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, dict):
        return None
    used = count(value, "input_tokens"), count(value, "output_tokens")
    return (used[0], used[1]) if used[0] is not None and used[1] is not None else None


def _finish(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RunnerError("the runner's answer has no finish_reason")
    return value


class HttpRunner(UpstreamRunner):
    name = "http"
    streams: bool | None = None  # does the server offer /infer/stream? None until tried

    async def list_models(self) -> list[RunnerModel]:
        reply = await self.http.get_json("/models")
        items = reply.get("models") if isinstance(reply, dict) else None
        if not isinstance(items, list):
            raise RunnerError("the runner's /models has no `models` list")
        served: list[RunnerModel] = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                context = count(item, "context_window") or self.fallback_context
                served.append(RunnerModel(item["id"], context, count(item, "max_tokens") or context))
        models, self.upstream_ids = select_models(self.model_override, served)
        return models

    def _upstream(self, req: InferenceRequest) -> dict[str, Any]:
        body = _body(req)
        body["model"] = self.upstream_ids.get(req.model, req.model)
        return body

    async def infer(self, req: InferenceRequest) -> RunnerResult:
        reply = await self.http.post_json("/infer", self._upstream(req), generation=True)
        if not isinstance(reply, dict) or not isinstance(reply.get("output"), str):
            raise RunnerError("the runner's /infer answer has no `output` text")
        output: str = reply["output"]
        used = _usage(reply.get("usage"))
        input_tokens, output_tokens = used or (
            estimated_input_tokens(req),
            estimate_tokens(len(output.encode())),
        )
        return RunnerResult(output, _finish(reply.get("finish_reason")), input_tokens, output_tokens)

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        if self.streams is not False:
            try:
                async with contextlib.aclosing(self._stream(req)) as items:
                    async for item in items:
                        self.streams = True  # the server answered its stream
                        yield item
                return
            except MissingEndpoint:
                if self.streams:  # it streamed before: this 404 is a real failure
                    raise
                self.streams = False
                log.info("the http runner has no /infer/stream: answers are sent as one chunk")
        result = await self.infer(req)
        if result.output:
            yield result.output
        yield result

    async def _stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        parts: list[str] = []
        async with contextlib.aclosing(self.http.objects("/infer/stream", self._upstream(req))) as objects:
            async for obj in objects:
                delta = obj.get("delta", "")
                if not isinstance(delta, str):
                    raise RunnerError("the runner sent a delta that is not text")
                if delta:
                    parts.append(delta)
                    yield delta
                if obj.get("done") is True:
                    used = _usage(obj.get("usage"))
                    input_tokens, output_tokens = used or (estimated_input_tokens(req), len(parts))
                    yield RunnerResult("".join(parts), _finish(obj.get("finish_reason")), input_tokens, output_tokens)
                    return
        raise RunnerError("the runner ended /infer/stream before its `done` event")

    async def estimate(self, req: InferenceRequest) -> Estimate:
        try:
            reply = await self.http.post_json("/estimate", self._upstream(req))
        except MissingEndpoint:
            return await super().estimate(req)
        if not isinstance(reply, dict):
            raise RunnerError("the runner's /estimate answer is not a JSON object")
        latency = reply.get("latency_ms", 0.0)
        return Estimate(
            input_tokens=count(reply, "input_tokens") or estimated_input_tokens(req),
            max_output_tokens=count(reply, "max_output_tokens") or req.max_tokens,
            latency_ms=float(latency) if isinstance(latency, int | float) and latency >= 0 else 0.0,
        )
