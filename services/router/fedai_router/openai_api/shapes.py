"""OpenAI's JSON shapes for answers, stream chunks and errors, built from fedai's verified results."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.messages import InferenceResponse, MeteringRecord, StreamChunk
from fedai.protocol.payment import PaymentRequired
from fedai_router.verify import Verified

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(err: FedaiError) -> dict[str, Any]:
    """OpenAI's error shape, with fedai's machine-readable code in `code` (and the option refused in `param`); a
    402 `payment_required` also carries the signed payment request to pay (`payment_request`)."""
    body: dict[str, Any] = {
        "message": err.message,
        "type": _ERROR_TYPES.get(err.status, "api_error"),
        "param": getattr(err, "param", None),
        "code": err.code.value,
    }
    if isinstance(err, PaymentRequired) and err.request is not None:
        body["payment_request"] = err.request.to_dict()
    paid = getattr(err, "paid_call", None)
    if paid is not None:  # the router paid this call before it failed: the proof, for a retry through /infer
        body["payment"] = paid
    return {"error": body}


def usage(record: MeteringRecord) -> dict[str, int]:
    return {
        "prompt_tokens": record.input_tokens,
        "completion_tokens": record.output_tokens,
        "total_tokens": record.input_tokens + record.output_tokens,
    }


def fedai_field(
    router: str, request: Event, answer: Event, record: MeteringRecord, node: str, payment: Any = None
) -> dict[str, Any]:
    """The verification material riding along every answer: check it with fedai.sdk.openai. A call the router
    paid from the caller's bound wallet also carries `payment` ({quote_id, proof}: what was paid, to whom)."""
    extra = {} if payment is None else {"payment": payment}
    return extra | {
        "chain_id": answer.id,
        "router": router,
        "node": node,
        "price_msat": record.price_msat,
        "request": request.to_dict(),
        "answer": answer.to_dict(),
    }


class Completion:
    """Answers for one call: `chat` (chat.completion) or `text` (text_completion)."""

    def __init__(self, kind: str, call_id: str, model: str) -> None:
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + call_id[:29]
        self.model = model
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full(self, answer: InferenceResponse, record: MeteringRecord, fedai: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": answer.output},
                "finish_reason": answer.finish_reason,
                "logprobs": None,
            }
            body = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": answer.output, "finish_reason": answer.finish_reason, "logprobs": None}
            body = self._head("text_completion")
        return {**body, "choices": [choice], "usage": usage(record), "fedai": fedai}

    def chunk(self, chunk: StreamChunk) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"content": chunk.delta}
            if chunk.seq == 0:
                delta["role"] = "assistant"
            return {
                **self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}],
            }
        return {
            **self._head("text_completion"),
            "choices": [{"index": 0, "text": chunk.delta, "finish_reason": None, "logprobs": None}],
        }

    def last_chunks(self, v: Verified, fedai: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        choice: dict[str, Any] = {"index": 0, "finish_reason": v.answer.finish_reason, "logprobs": None}
        if self.chat:
            choice["delta"] = {}
        else:
            choice["text"] = ""
        final = {**self._head(obj), "choices": [choice], "fedai": fedai}
        if not include_usage:
            return [final]
        return [final, {**self._head(obj), "choices": [], "usage": usage(v.record)}]


def sse_data(document: dict[str, Any] | str) -> bytes:
    payload = document if isinstance(document, str) else msgspec.json.encode(document).decode()
    return f"data: {payload}\n\n".encode()
