"""The OpenAI-compatible request shapes mapped to fedai's `InferenceRequest`: one deterministic function the
router uses to forward a call and a client uses to verify the chain it got back. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import ChatMessage, InferenceRequest

DEFAULT_MAX_TOKENS = 256
_ROLES = {"system", "user", "assistant", "tool", "developer"}
# options a node cannot honour: refused by name rather than silently ignored (an answer without the tool call,
# or one choice where n were asked, would look like a model's failure)
_NO_TOOLS = "function calling is not supported: fedai nodes return text only"
_UNSUPPORTED = {
    "tools": _NO_TOOLS,
    "tool_choice": _NO_TOOLS,
    "functions": _NO_TOOLS,
    "function_call": _NO_TOOLS,
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
}


class UnsupportedParameter(FedaiError):
    """A request option the federation does not implement (`400 invalid_request`); `param` names it, as OpenAI's
    error shape does."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, f"{param}: {message}")
        self.param = param


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """`n` above 1, and tools, functions or logprobs asked for (a null, false, empty or "none" value asks nothing)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise UnsupportedParameter("n", "only one choice per request is supported (n must be 1); send n requests")
    for param, message in _UNSUPPORTED.items():
        if body.get(param) not in (None, False, [], "none", 0):
            raise UnsupportedParameter(param, message)


def _text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which only text is supported."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise FedaiError(ErrorCode.INVALID_REQUEST, "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise FedaiError(ErrorCode.INVALID_REQUEST, "message content must be a string or a list of text parts")


def _common(body: dict[str, Any]) -> dict[str, Any]:
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "model is required")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    stop = body.get("stop")
    fields: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "stream": bool(body.get("stream", False)),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _build(fields: dict[str, Any]) -> InferenceRequest:
    try:
        return msgspec.convert(fields, InferenceRequest)
    except msgspec.ValidationError as exc:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"invalid request: {exc}") from None


def chat_request(body: Any) -> InferenceRequest:
    """`POST /v1/chat/completions` body → InferenceRequest (messages)."""
    if not isinstance(body, dict):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "messages must be a non-empty list")
    chat = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise FedaiError(ErrorCode.INVALID_REQUEST, f"each message needs a role in {sorted(_ROLES)}")
        chat.append(ChatMessage(role=str(m["role"]), content=_text(m.get("content", ""))))
    fields = _common(body)
    fields["messages"] = [msgspec.to_builtins(m) for m in chat]
    return _build(fields)


def completion_request(body: Any) -> InferenceRequest:
    """`POST /v1/completions` body → InferenceRequest (prompt; a list of one prompt is accepted)."""
    if not isinstance(body, dict):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "prompt must be a string (one prompt per request)")
    fields = _common(body)
    fields["prompt"] = prompt
    return _build(fields)
