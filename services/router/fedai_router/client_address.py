"""The source address of an HTTP request, for per-address limits (registration rates)."""

from __future__ import annotations

from starlette.requests import Request


def client_address(request: Request) -> str:
    """The connection's peer address ("unknown" when the server does not know it). Trusted-proxy
    `X-Forwarded-For` handling belongs here, so every per-address limit sees the same address."""
    return request.client.host if request.client is not None else "unknown"
