"""HTTP plumbing shared by the runners that call a model server: one aiohttp session per runner, bounded
reads, Server-Sent Events, and the mapping of the server's errors to `RunnerError`.

Error messages are built here from the HTTP status, the error `type` (when it is a short identifier) and
integer counts only: a server's free-text message is used to classify the error, never forwarded, because
some servers echo parts of the prompt in it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec

from fedai.protocol.errors import ErrorCode
from fedai.protocol.messages import InferenceRequest
from fedai.service.client import ReplyTooLarge, read_limited
from fedai.service.sse import SSEDecoder, SSEError
from fedai_node.runners.base import Runner, RunnerError, RunnerModel

MAX_REPLY_BYTES = 8 * 1024 * 1024  # a whole JSON answer
MAX_EVENT_BYTES = 1024 * 1024  # one SSE event
MAX_STREAM_BYTES = 64 * 1024 * 1024  # one whole stream
CONTROL_TIMEOUT_S = 10.0  # models, props, health, templates: small answers
CONNECT_TIMEOUT_S = 5.0
LOADING_RETRY_MS = 1000

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_CONTEXT_WORDS = ("context length", "context size", "context window", "maximum context", "n_ctx", "too many tokens")
_CONTEXT_TYPES = ("exceed_context_size_error", "context_length_exceeded")
_decode = msgspec.json.Decoder().decode


class MissingEndpoint(RunnerError):
    """The server has no such endpoint (404/405 without a model error): an optional feature is absent."""


def chat_messages(req: InferenceRequest) -> list[dict[str, str]]:
    """The request's chat messages in the OpenAI shape."""
    return [{"role": m.role, "content": m.content} for m in req.messages or ()]


def loads(data: bytes, what: str) -> Any:
    """Decode the server's JSON or raise `RunnerError` (502) naming what was malformed."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, UnicodeError):
        raise RunnerError(f"the runner returned malformed JSON ({what})") from None


def count(obj: Mapping[str, Any], key: str) -> int | None:
    """A non-negative integer field, or None when absent or not one."""
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _error_fields(body: Any) -> tuple[str, str, dict[str, Any]]:
    """(type, lower-cased message, the error object) from the error shapes servers use:
    llama-server `{"error": {code, message, type}}`, vLLM `{"object": "error", message, type, code}` (or the
    same under `error`), OpenAI `{"error": {message, type, code}}`, ours `{"error": {code, message}}`."""
    err: Any = body.get("error", body) if isinstance(body, dict) else {}
    if isinstance(err, str):
        return "", err.lower(), {}
    if not isinstance(err, dict):
        return "", "", {}
    kind = next((v for k in ("type", "code") if isinstance(v := err.get(k), str) and _IDENTIFIER.match(v)), "")
    message = err.get("message")
    return kind, message.lower() if isinstance(message, str) else "", err


def _names_missing_model(kind: str, message: str) -> bool:
    """Does the server's error say the model is unknown?"""
    if kind in ("model_not_found", "unknown_model"):
        return True
    return "model" in message and ("not found" in message or "does not exist" in message or "unknown" in message)


def _refused(kind: str, message: str, err: dict[str, Any], label: str, model_error: bool) -> RunnerError:
    """A request the server refused as invalid (400, 413, 422): too long for the context, an unknown model, or
    otherwise invalid."""
    if kind in _CONTEXT_TYPES or any(word in message for word in _CONTEXT_WORDS):
        counts = ", ".join(f"{k}={v}" for k in ("n_prompt_tokens", "n_ctx") if (v := count(err, k)) is not None)
        detail = f" ({counts})" if counts else ""
        return RunnerError(
            f"the prompt plus max_tokens exceed the runner's context window{detail}", ErrorCode.INVALID_REQUEST
        )
    if model_error:
        return RunnerError(f"the runner does not serve this model ({label})", ErrorCode.UNKNOWN_MODEL)
    return RunnerError(f"the runner refused the request as invalid ({label})", ErrorCode.INVALID_REQUEST)


def error_from_body(status: int, body: Any, retry_after: str | None = None, *, path: str = "") -> RunnerError:
    """The typed error for a server's error answer (an HTTP status, or an error object inside a stream)."""
    kind, message, err = _error_fields(body)
    label = f"HTTP {status}" + (f", {kind}" if kind else "")
    model_error = _names_missing_model(kind, message)
    if status in (400, 413, 422) or kind in _CONTEXT_TYPES:
        return _refused(kind, message, err, label, model_error)
    if status == 404 and model_error:
        return RunnerError(f"the runner does not serve this model ({label})", ErrorCode.UNKNOWN_MODEL)
    if status in (404, 405):
        return MissingEndpoint(f"the runner has no {path or 'such'} endpoint ({label})")
    if status in (401, 403):
        return RunnerError(f"the runner refused our credentials ({label}); check NODE_RUNNER_API_KEY")
    retry_ms = int(retry_after) * 1000 if retry_after is not None and retry_after.isdigit() else None
    if status == 429:
        return RunnerError(f"the runner is busy ({label})", ErrorCode.CAPACITY_EXCEEDED, retry_ms or LOADING_RETRY_MS)
    if status == 503:
        return RunnerError(
            f"the runner is loading or has no free slot ({label})", ErrorCode.NO_CAPACITY, retry_ms or LOADING_RETRY_MS
        )
    if status in (408, 504):
        return RunnerError(f"the runner timed out ({label})", ErrorCode.UPSTREAM_TIMEOUT)
    return RunnerError(f"the runner failed ({label})")


def stream_error(obj: Mapping[str, Any], path: str) -> RunnerError | None:
    """The error a server sent inside a stream after its 200, if `obj` is one: llama-server and OpenAI
    `{"error": {...}}` (llama-server's carries the HTTP-like `code`), older vLLM `{"object": "error", ...}`."""
    if "error" not in obj and obj.get("object") != "error":
        return None
    err = obj.get("error", obj)
    status = count(err, "code") if isinstance(err, dict) else None
    return error_from_body(status if status and status >= 400 else 500, obj, path=path)


def transport_error(exc: BaseException, timeout_s: float) -> RunnerError:
    """A connection-level failure as a typed error (the exception's type only: its text may carry URLs)."""
    if isinstance(exc, TimeoutError):  # aiohttp's socket timeouts are TimeoutError subclasses
        return RunnerError(f"the runner did not answer within {timeout_s:g} s", ErrorCode.UPSTREAM_TIMEOUT)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RunnerError("the runner is unreachable (connection refused or no route)")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return RunnerError(f"the runner closed the connection mid-answer ({type(exc).__name__})")
    if isinstance(exc, ReplyTooLarge):
        return RunnerError(f"the runner's reply exceeds {MAX_REPLY_BYTES} bytes")
    return RunnerError(f"the runner connection failed ({type(exc).__name__})")


def select_models(override: str | None, served: list[RunnerModel]) -> tuple[list[RunnerModel], dict[str, str]]:
    """The models to advertise and a map advertised id -> the server's id.

    Without `NODE_MODEL_ID` every served model is advertised under its own id. With it, only that model: the
    server's model of that name, or the server's only model renamed (llama-server names a model by its file).
    """
    if not served:
        raise RunnerError("the runner lists no models")
    if override is None:
        return served, {m.id: m.id for m in served}
    chosen = next((m for m in served if m.id == override), served[0] if len(served) == 1 else None)
    if chosen is None:
        names = ", ".join(m.id for m in served[:5]) + (", ..." if len(served) > 5 else "")
        raise RunnerError(f"NODE_MODEL_ID={override!r} is not served by the runner (it serves: {names})")
    return [RunnerModel(override, chosen.context_window, chosen.max_tokens)], {override: chosen.id}


class Upstream:
    """One model server: a lazily created aiohttp session (one per runner), JSON calls and SSE streams."""

    def __init__(self, base_url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        connect = min(CONNECT_TIMEOUT_S, timeout_s)
        self._control = aiohttp.ClientTimeout(total=min(CONTROL_TIMEOUT_S, timeout_s), sock_connect=connect)
        # generation: no total (the node bounds the whole call), but the socket must not stall longer
        self._generation = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=timeout_s)

    def __repr__(self) -> str:  # never show the key
        return f"Upstream({self.base_url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def status(self, path: str) -> int:
        """The HTTP status of `GET path` (a health probe). Raises `RunnerError` if the server is unreachable."""
        try:
            async with self._client().get(self.base_url + path, timeout=self._control) as resp:
                await read_limited(resp, MAX_EVENT_BYTES)
                return resp.status
        except (aiohttp.ClientError, TimeoutError, ReplyTooLarge) as exc:
            raise transport_error(exc, self._control.total or self.timeout_s) from None

    async def get_json(self, path: str) -> Any:
        return await self._json("GET", path, None, self._control)

    async def post_json(self, path: str, body: Any, *, generation: bool = False) -> Any:
        """POST JSON and decode the JSON answer; `generation` calls get the generation timeout."""
        return await self._json("POST", path, body, self._generation if generation else self._control)

    async def _json(self, method: str, path: str, body: Any, limits: aiohttp.ClientTimeout) -> Any:
        try:
            async with self._client().request(method, self.base_url + path, json=body, timeout=limits) as resp:
                data = await read_limited(resp, MAX_REPLY_BYTES)
                if resp.status != 200:
                    raise error_from_body(resp.status, _maybe_json(data), resp.headers.get("Retry-After"), path=path)
        except (aiohttp.ClientError, TimeoutError, ReplyTooLarge) as exc:
            raise transport_error(exc, limits.total or self.timeout_s) from None
        return loads(data, path)

    async def events(self, path: str, body: Any) -> AsyncGenerator[bytes, None]:
        """POST `body` and yield the `data` of each Server-Sent Event as it arrives.

        Closing this iterator closes the HTTP response (and its connection), which is how llama-server and
        vLLM learn to stop generating.
        """
        try:
            async with self._client().post(
                self.base_url + path, json=body, timeout=self._generation, headers={"Accept": "text/event-stream"}
            ) as resp:
                if resp.status != 200:
                    data = await read_limited(resp, MAX_REPLY_BYTES)
                    raise error_from_body(resp.status, _maybe_json(data), resp.headers.get("Retry-After"), path=path)
                if "json" in resp.headers.get("Content-Type", ""):
                    raise RunnerError(f"the runner answered {path} with JSON instead of an event stream")
                decoder, total = SSEDecoder(MAX_EVENT_BYTES), 0
                try:
                    async for chunk in resp.content.iter_any():
                        total += len(chunk)
                        if total > MAX_STREAM_BYTES:
                            raise RunnerError(f"the runner's stream exceeds {MAX_STREAM_BYTES} bytes")
                        for event in decoder.feed(chunk):
                            yield event.data
                finally:
                    resp.close()  # a no-op after a complete read; mid-stream it drops the connection
        except (aiohttp.ClientError, TimeoutError, ReplyTooLarge) as exc:
            raise transport_error(exc, self.timeout_s) from None
        except SSEError:
            raise RunnerError(f"the runner sent malformed Server-Sent Events on {path}") from None

    async def objects(self, path: str, body: Any, *, done: bytes | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """`events` decoded: each event a JSON object, an error the server sent mid-stream raised as typed.
        Ends at the `done` sentinel (OpenAI's `[DONE]`) when one is given."""
        async with contextlib.aclosing(self.events(path, body)) as events:
            async for data in events:
                if done is not None and data.strip() == done:
                    return
                obj = loads(data, f"{path} stream")
                if not isinstance(obj, dict):
                    raise RunnerError(f"the runner sent a {path} stream event that is not a JSON object")
                if (error := stream_error(obj, path)) is not None:
                    raise error
                yield obj


def _maybe_json(data: bytes) -> Any:
    try:
        return _decode(data)
    except (msgspec.DecodeError, UnicodeError):
        return None


class UpstreamRunner(Runner):
    """What the HTTP runners share: one `Upstream` to the model server, an optional model id override, the
    context window to assume when the server does not say, and health as one GET answering 200."""

    health_path = "/health"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        model_id: str | None = None,
        context_window: int = 4096,
        api_key: str | None = None,
    ) -> None:
        self.http = Upstream(self.base_url(url), timeout_s=timeout_s, api_key=api_key)
        self.model_override = model_id
        self.upstream_ids: dict[str, str] = {}  # advertised id -> the server's id (http, openai)
        self.fallback_context = context_window

    @staticmethod
    def base_url(url: str) -> str:
        return url

    async def health(self) -> bool:
        try:
            return await self.http.status(self.health_path) == 200
        except RunnerError:
            return False

    async def close(self) -> None:
        await self.http.close()
