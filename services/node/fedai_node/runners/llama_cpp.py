"""llama.cpp's `llama-server`, through its native API (`NODE_RUNNER=llama_cpp`, `NODE_RUNNER_URL` = the server's
base URL, e.g. `http://127.0.0.1:8080`).

- model id and context window: `GET /props` (`model_alias`, `default_generation_settings.n_ctx`, which is
  already the context of one slot: llama-server splits `-c` across `--parallel` slots);
- prompts: `POST /completion` with `stream: true`: SSE `data: {"content": ..., "stop": false}` per token, then
  one object with `stop: true`, `stop_type` (`eos`, `word`, `limit`), `tokens_evaluated` (prompt tokens) and
  `tokens_predicted` (generated tokens);
- chat (`messages`): `POST /apply-template` renders the model's own chat template into a prompt, then the
  same `/completion` call, so both request shapes share one streaming parser and one usage source;
- health: `GET /health` (503 while the model loads).
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import AsyncGenerator
from typing import Any

from fedai.protocol.messages import InferenceRequest
from fedai_node.runners.base import RunnerError, RunnerModel, RunnerResult, StreamItem, estimated_input_tokens
from fedai_node.runners.upstream import (
    UpstreamRunner,
    chat_messages,
    count,
    select_models,
)

_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


class LlamaCppRunner(UpstreamRunner):
    name = "llama_cpp"

    async def list_models(self) -> list[RunnerModel]:
        props = await self.http.get_json("/props")
        if not isinstance(props, dict):
            raise RunnerError("llama-server /props is not a JSON object")
        name = props.get("model_alias") or posixpath.basename(str(props.get("model_path") or "")) or None
        settings = props.get("default_generation_settings")
        n_ctx = count(settings, "n_ctx") if isinstance(settings, dict) else None
        context = n_ctx or self.fallback_context
        if not isinstance(name, str):
            if self.model_override is None:
                raise RunnerError("llama-server /props names no model; set NODE_MODEL_ID")
            name = self.model_override
        models, _ = select_models(self.model_override, [RunnerModel(name, context, context)])
        return models

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        prompt = req.prompt if req.prompt is not None else await self._apply_template(req)
        body: dict[str, Any] = {"prompt": prompt, "n_predict": req.max_tokens, "stream": True, "cache_prompt": True}
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        parts: list[str] = []
        async with contextlib.aclosing(self.http.objects("/completion", body)) as objects:
            async for obj in objects:
                content = obj.get("content", "")
                if not isinstance(content, str):
                    raise RunnerError("llama-server sent a stream event whose content is not text")
                if content:
                    parts.append(content)
                    yield content
                if obj.get("stop") is True:
                    yield self._result(req, obj, parts)
                    return
        raise RunnerError("llama-server ended the stream before its final event")

    def _result(self, req: InferenceRequest, final: dict[str, Any], parts: list[str]) -> RunnerResult:
        prompt_tokens = count(final, "tokens_evaluated")
        generated = count(final, "tokens_predicted")
        return RunnerResult(
            output="".join(parts),
            finish_reason=_FINISH.get(str(final.get("stop_type")), "stop"),
            input_tokens=prompt_tokens if prompt_tokens is not None else estimated_input_tokens(req),
            output_tokens=generated if generated is not None else len(parts),
        )

    async def _apply_template(self, req: InferenceRequest) -> str:
        """The model's chat template applied by the server itself (`POST /apply-template`)."""
        reply = await self.http.post_json("/apply-template", {"messages": chat_messages(req)})
        prompt = reply.get("prompt") if isinstance(reply, dict) else None
        if not isinstance(prompt, str):
            raise RunnerError("llama-server /apply-template returned no prompt")
        return prompt
