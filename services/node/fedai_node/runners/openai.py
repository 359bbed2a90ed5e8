"""Any OpenAI-compatible server: vLLM, llama-server's `/v1`, others (`NODE_RUNNER=openai`).

`NODE_RUNNER_URL` is the API base. A URL with no path gets `/v1` appended (`http://host:8000` means
`http://host:8000/v1`); a URL with a path is used as given (`https://example.org/api/openai/v1`).

- models: `GET {base}/models`; the context window from `max_model_len` (vLLM), `meta.n_ctx` (llama-server)
  or `context_length`/`context_window`, else `NODE_CONTEXT_WINDOW`;
- prompts: `POST {base}/completions`, chat: `POST {base}/chat/completions`, always with `stream: true` and
  `stream_options: {"include_usage": true}`; the stream ends with `data: [DONE]`;
- usage: `usage.prompt_tokens` / `usage.completion_tokens` from the server. A server that sends none is
  counted locally: output = the number of streamed content deltas (one token each on vLLM and llama-server),
  input = prompt bytes / 4 (the compact JSON of `messages` for chat), rounded up;
- `NODE_RUNNER_API_KEY`, when set, is sent as `Authorization: Bearer ...` (never logged).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

from fedai.protocol.messages import InferenceRequest
from fedai_node.runners.base import RunnerError, RunnerModel, RunnerResult, StreamItem, estimated_input_tokens
from fedai_node.runners.upstream import (
    UpstreamRunner,
    chat_messages,
    count,
    select_models,
)

DONE = b"[DONE]"


def api_base(url: str) -> str:
    """`http://host:port` -> `http://host:port/v1`; a URL with a path is kept as given."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def _context(item: dict[str, Any]) -> int | None:
    meta = item.get("meta")
    for value in (
        count(item, "max_model_len"),
        count(meta, "n_ctx") if isinstance(meta, dict) else None,
        count(item, "context_length"),
        count(item, "context_window"),
    ):
        if value:
            return value
    return None


class OpenAIRunner(UpstreamRunner):
    name = "openai"
    health_path = "/models"

    async def list_models(self) -> list[RunnerModel]:
        reply = await self.http.get_json("/models")
        items = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(items, list):
            raise RunnerError("the runner's /models has no `data` list")
        served: list[RunnerModel] = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                context = _context(item) or self.fallback_context
                served.append(RunnerModel(item["id"], context, context))
        models, self.upstream_ids = select_models(self.model_override, served)
        return models

    def _request(self, req: InferenceRequest) -> tuple[str, dict[str, Any]]:
        model = self.upstream_ids.get(req.model, req.model)
        body: dict[str, Any]
        if req.messages is not None:
            path, body = "/chat/completions", {"model": model, "messages": chat_messages(req)}
        else:
            path, body = "/completions", {"model": model, "prompt": req.prompt}
        body.update(max_tokens=req.max_tokens, stream=True, stream_options={"include_usage": True})
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        return path, body

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        path, body = self._request(req)
        chat = req.messages is not None
        parts: list[str] = []
        finish: str | None = None
        usage: tuple[int, int] | None = None
        async with contextlib.aclosing(self.http.objects(path, body, done=DONE)) as objects:
            async for obj in objects:
                usage = _usage(obj.get("usage")) or usage
                text, reason = _choice(obj.get("choices"), chat)
                if text:
                    parts.append(text)
                    yield text
                finish = reason or finish
        if finish is None:
            raise RunnerError(f"the runner's {path} stream ended without a finish_reason")
        input_tokens, output_tokens = usage or (estimated_input_tokens(req), len(parts))
        yield RunnerResult("".join(parts), finish, input_tokens, output_tokens)

    @staticmethod
    def base_url(url: str) -> str:
        return api_base(url)


def _usage(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = count(value, "prompt_tokens"), count(value, "completion_tokens")
    return (prompt, completion) if prompt is not None and completion is not None else None


def _choice(choices: Any, chat: bool) -> tuple[str, str | None]:
    """(text delta, finish_reason) of the first choice of one chunk; `("", None)` for a usage-only chunk."""
    if not isinstance(choices, list) or not choices:
        return "", None
    first = choices[0]
    if not isinstance(first, dict):
        raise RunnerError("the runner sent a choice that is not a JSON object")
    holder = first.get("delta") if chat else first  # chat: choices[0].delta.content; completions: .text
    text = holder.get("content" if chat else "text") if isinstance(holder, dict) else None
    if text is not None and not isinstance(text, str):
        raise RunnerError("the runner sent a choice whose text is not a string")
    reason = first.get("finish_reason")
    return text or "", reason if isinstance(reason, str) and reason else None
