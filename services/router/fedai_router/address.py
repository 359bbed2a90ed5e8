"""Where a request comes from, and the per-source-address rate limit every route passes through.

Keys are free, so per-key limits alone stop nobody: every request is also charged to its source address.
`X-Forwarded-For` is believed only when the TCP peer is one of `ROUTER_TRUSTED_PROXIES`; the client is then the
right-most address in the chain that is not itself a trusted proxy (everything left of it was written by the
client and can be forged). IPv6 clients are limited per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fedai.protocol.errors import FedaiError
from fedai.service.http import error_response, json_response
from fedai_router.config import IPNetwork, RouterSettings
from fedai_router.metrics import RouterMetrics
from fedai_router.openai_api.shapes import error_body
from fedai_router.ratelimit import RateLimiter

UNKNOWN = "unknown"  # no peer address (e.g. a unix socket): one shared bucket
IPV6_PREFIX = 64
_XFF = b"x-forwarded-for"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> IPAddress | None:
    """An address from a peer or an X-Forwarded-For entry (`1.2.3.4`, `1.2.3.4:567`, `::1`, `[::1]:567`)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in proxies)


def address_from_scope(scope: Scope, proxies: Sequence[IPNetwork]) -> str:
    """The client's address for an ASGI scope (see the module docstring for the X-Forwarded-For rule)."""
    client = scope.get("client")
    peer = _parse(str(client[0])) if client else None
    if peer is None:
        return UNKNOWN
    if not proxies or not _trusted(peer, proxies):
        return str(peer)
    chain = b",".join(value for name, value in scope.get("headers", ()) if name == _XFF)
    hop = peer
    for entry in reversed(chain.decode("latin-1").split(",")) if chain else ():
        address = _parse(entry)
        if address is None:  # garbage: everything from here leftwards came from the client
            break
        hop = address
        if not _trusted(address, proxies):
            break
    return str(hop)


def client_address(request: Request, settings: RouterSettings) -> str:
    """The source address of `request`: the TCP peer, or the X-Forwarded-For client when the peer is a trusted
    proxy (`ROUTER_TRUSTED_PROXIES`). For limits, group it with `rate_key`."""
    return address_from_scope(request.scope, settings.trusted_proxies)


def rate_key(address: str) -> str:
    """The bucket an address is charged to: itself for IPv4, its /64 for IPv6."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    except ValueError:
        return address


class AddressLimit:
    """ASGI middleware: every HTTP request takes a token from its source address's bucket or gets a typed 429
    (OpenAI's error shape under /v1/), before routing, body reading or authentication."""

    def __init__(self, app: ASGIApp, settings: RouterSettings, metrics: RouterMetrics) -> None:
        self.app = app
        self.proxies = settings.trusted_proxies
        self.limiter = RateLimiter(
            settings.addr_rate_limit_max, settings.addr_rate_limit_window_ms / 1000, what="address"
        )
        self.limited = metrics.requests.labels("address_limit", "rate_limited")
        self.errors = metrics.errors.labels("rate_limited")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.limiter.check(rate_key(address_from_scope(scope, self.proxies)))
        except FedaiError as err:
            self.limited.inc()
            self.errors.inc()
            await _refusal(scope, err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _refusal(scope: Scope, err: FedaiError) -> Response:
    if not str(scope.get("path", "")).startswith("/v1/"):
        return error_response(err)
    response = json_response(error_body(err), status=err.status)
    response.headers["Retry-After"] = str(max(1, math.ceil((err.retry_after_ms or 0) / 1000)))
    return response
