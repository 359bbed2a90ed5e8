"""Request bodies with a hard size limit, and typed JSON error responses (docs/decisions.md#errors)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event

JSON = "application/json"
_encode = msgspec.json.Encoder().encode


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with `too_large` once it passes `limit` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise FedaiError(ErrorCode.INVALID_JSON, "invalid Content-Length") from None
        if size > limit:
            raise FedaiError(ErrorCode.TOO_LARGE, f"body is {size} bytes, limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise FedaiError(ErrorCode.TOO_LARGE, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_header(err: FedaiError) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1) when the error says when to retry; else no header."""
    if err.retry_after_ms is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(err.retry_after_ms / 1000)))}


def error_response(err: FedaiError) -> Response:
    return Response(_encode(err.to_dict()), status_code=err.status, media_type=JSON, headers=retry_after_header(err))


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encode(data), status_code=status, media_type=JSON)


def event_response(event: Event, status: int = 200) -> Response:
    return Response(event.to_json(), status_code=status, media_type=JSON)
