"""Who is calling the OpenAI-compatible API: a NIP-98 signature, or an operator-issued API key mapped to a key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.requests import Request

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.nip98 import verify_auth_header
from fedai_router.service import RouterService


@dataclass(frozen=True, slots=True)
class Caller:
    client: str  # the caller's pubkey
    auth_event: Event | None  # the verified NIP-98 event (None for an API key)


def request_url(svc: RouterService, request: Request) -> str:
    """The full URL the client called, as NIP-98 `u` tags name it (ROUTER_PUBLIC_URL behind a proxy)."""
    if svc.settings.public_url:
        query = f"?{request.url.query}" if request.url.query else ""
        return svc.settings.public_url + request.url.path + query
    return str(request.url)


async def authenticate(svc: RouterService, request: Request, body: bytes) -> Caller:
    """NIP-98 (`Authorization: Nostr …`, replay-checked) or `Authorization: Bearer <api key>`; else 401."""
    header = request.headers.get("authorization", "")
    if not header:
        raise FedaiError(ErrorCode.UNAUTHORIZED, "send Authorization: Nostr <NIP-98 event> or Bearer <api key>")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer":
        client = svc.settings.api_keys.get(hashlib.sha256(credential.strip().encode()).hexdigest())
        if client is None:
            raise FedaiError(ErrorCode.UNAUTHORIZED, "unknown API key")
        _client_policy(svc, client)
        return Caller(client, None)
    event = verify_auth_header(
        header, method=request.method, url=request_url(svc, request), body=body, window_s=svc.settings.nip98_window_s
    )
    _client_policy(svc, event.pubkey)
    await svc.claim_locally(event)
    await svc.claim(event)
    return Caller(event.pubkey, event)


def _client_policy(svc: RouterService, client: str) -> None:
    settings = svc.settings
    if (settings.client_allowlist and client not in settings.client_allowlist) or client in settings.client_blocklist:
        raise FedaiError(ErrorCode.FORBIDDEN, "this client key is not allowed here")
    svc.limiter.check(client)
