"""Who is calling the OpenAI-compatible API: a NIP-98 signature, or an operator-issued API key mapped to a key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.service.admin_auth import check_nip98, public_request_url
from fedai_router.claims import Claims
from fedai_router.ratelimit import RateLimiter

NOT_CONFIGURED = (
    "NIP-98 authorization is off on this router: ROUTER_PUBLIC_URL is not configured (the URL a NIP-98 event "
    "names cannot be checked without it); use an API key, or ask the operator to set ROUTER_PUBLIC_URL"
)


@dataclass(frozen=True, slots=True)
class Caller:
    client: str  # the caller's pubkey
    auth_event: Event | None  # the verified NIP-98 event (None for an API key)
    api_key_sha256: str | None = None  # the API key's digest (None for NIP-98): what a wallet binding names


@dataclass(frozen=True)
class Authenticator:
    claims: Claims  # NIP-98 events are claimed like any signed event
    limiter: RateLimiter  # per client
    public_url: str | None  # ROUTER_PUBLIC_URL: what NIP-98 `u` tags must name (None: NIP-98 is refused)
    window_s: int  # FEDAI_NIP98_WINDOW_S
    api_keys: Mapping[str, str]  # sha256(key) hex -> client pubkey
    client_allowlist: frozenset[str] = frozenset()
    client_blocklist: frozenset[str] = frozenset()

    def request_url(self, request: Request) -> str:
        """The full URL the client called, as NIP-98 `u` tags name it: always ROUTER_PUBLIC_URL + path + query
        (`fedai.service.admin_auth.public_request_url`); without ROUTER_PUBLIC_URL, `auth_not_configured`."""
        return public_request_url(self.public_url, request, NOT_CONFIGURED)

    def check_nip98(self, request: Request, body: bytes) -> Event:
        """A NIP-98 `Authorization` header checked against this router's public URL (every failure a typed 401).
        Not yet claimed: call `claim` once the caller is known to be allowed."""
        return check_nip98(request, body, url=self.request_url(request), window_s=self.window_s)

    async def claim(self, event: Event) -> None:
        """Claim a NIP-98 event in the replay store (this replica first, then Postgres, shared by every replica);
        a replay is 409 `replay`. The store keeps it at least as long as `FEDAI_NIP98_WINDOW_S` accepts it."""
        await self.claims.claim_locally(event)
        await self.claims.claim(event)

    async def authenticate(self, request: Request, body: bytes) -> Caller:
        """NIP-98 (`Authorization: Nostr …`, replay-checked) or `Authorization: Bearer <api key>`; else 401."""
        header = request.headers.get("authorization", "")
        if not header:
            raise FedaiError(ErrorCode.UNAUTHORIZED, "send Authorization: Nostr <NIP-98 event> or Bearer <api key>")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            digest = hashlib.sha256(credential.strip().encode()).hexdigest()
            client = self.api_keys.get(digest)
            if client is None:
                raise FedaiError(ErrorCode.UNAUTHORIZED, "unknown API key")
            self._client_policy(client)
            return Caller(client, None, digest)
        event = self.check_nip98(request, body)
        self._client_policy(event.pubkey)
        await self.claim(event)
        return Caller(event.pubkey, event)

    def _client_policy(self, client: str) -> None:
        if (self.client_allowlist and client not in self.client_allowlist) or client in self.client_blocklist:
            raise FedaiError(ErrorCode.FORBIDDEN, "this client key is not allowed here")
        self.limiter.check(client)
