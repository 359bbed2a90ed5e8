"""How the node reaches a client's LNURL-pay destination (docs/payments.md#refunds): the name is resolved once,
every address it resolves to must be public (unless NODE_REFUND_ALLOW_PRIVATE, for loopback tests), and the
connection goes to that checked address (the name only in the Host header and TLS SNI), so a name that
re-resolves to a private address meanwhile is never reached. No redirect is followed; the body is bounded."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from fedai.payments.destination import FetchJson
from fedai.protocol.jsonguard import decode_json

MAX_BYTES = 64 * 1024
TIMEOUT_S = 10.0


class AddressRefused(OSError):
    """The destination resolved to a non-public address."""


async def _checked_address(host: str, port: int, allow_private: bool) -> str:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise AddressRefused("the destination resolved to no address")
    if not allow_private and not all(ipaddress.ip_address(a).is_global for a in addresses):
        raise AddressRefused("the destination resolves to a non-public address")
    return addresses[0]


def public_fetch(*, allow_private: bool = False) -> FetchJson:
    async def fetch(url: str) -> Any:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError("no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await _checked_address(parts.hostname, port, allow_private)
        literal = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, ""))
        host = parts.netloc.rpartition("@")[2]
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as client:
            request = client.build_request("GET", pinned, headers={"Host": host})
            request.extensions["sni_hostname"] = parts.hostname
            reply = await client.send(request, stream=True)
            try:
                body = await _read(reply)
            finally:
                await reply.aclose()
        if reply.status_code != 200:
            raise OSError(f"LNURL answer {reply.status_code}")
        return decode_json(body)

    return fetch


async def _read(reply: httpx.Response) -> bytes:
    chunks, total = [], 0
    async for chunk in reply.aiter_bytes():
        total += len(chunk)
        if total > MAX_BYTES:
            raise OSError("LNURL answer too large")
        chunks.append(chunk)
    return b"".join(chunks)
