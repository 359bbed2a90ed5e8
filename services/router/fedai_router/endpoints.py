"""Validation of node endpoints: refuse loopback, private, link-local and other non-global addresses,
including DNS names that resolve to them, unless ROUTER_ALLOW_PRIVATE_ENDPOINTS is on (DESIGN.md sections 7, 10)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from fedai.protocol.errors import ErrorCode, FedaiError


def parse_endpoint(url: str) -> tuple[str, int]:
    """Check the URL's shape; return (host, port). Pure."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must be an http or https URL")
    if not parts.hostname:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint has no host")
    if parts.username is not None or parts.password is not None:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must not carry credentials")
    if parts.query or parts.fragment:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must not have a query or fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 is judged by its IPv4). Pure."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class EndpointValidator:
    """Resolves and checks endpoints; caches verdicts briefly so heartbeats don't resolve DNS every beat."""

    def __init__(self, allow_private: bool, cache_ttl_s: float = 60.0) -> None:
        self.allow_private = allow_private
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, FedaiError | None]] = {}

    async def check(self, url: str) -> None:
        host, port = parse_endpoint(url)
        if self.allow_private:
            return
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            if cached[1] is not None:
                raise cached[1]
            return
        error = await self._resolve_and_judge(host, port)
        self._cache[url] = (now + self._ttl, error)
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        if error is not None:
            raise error

    async def _resolve_and_judge(self, host: str, port: int) -> FedaiError | None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return FedaiError(ErrorCode.INVALID_REQUEST, "endpoint host does not resolve")
        addresses = {str(info[4][0]) for info in infos}
        if not addresses:
            return FedaiError(ErrorCode.INVALID_REQUEST, "endpoint host does not resolve")
        for address in addresses:
            if not is_public_address(address):
                return FedaiError(
                    ErrorCode.FORBIDDEN,
                    "endpoint resolves to a loopback, private or otherwise non-public address "
                    "(set ROUTER_ALLOW_PRIVATE_ENDPOINTS=true for a private network)",
                )
        return None
