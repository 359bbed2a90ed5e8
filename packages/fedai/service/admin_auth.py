"""Who may call a service's admin API (runbooks/admin.md): a NIP-98 event for this service's public URL, this
method and this body, signed by one of its configured admin keys and never seen before. The router
(ROUTER_ADMIN_KEYS) and the node (NODE_ADMIN_KEYS) both check their admin calls here; each brings its public URL
and its replay store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.nip98 import verify_auth_header

Claim = Callable[[Event], Awaitable[None]]  # a replay store's claim: raises 409 `replay` for an id seen before


def public_request_url(public_url: str | None, request: Request, not_configured: str) -> str:
    """The full URL the caller called, as NIP-98 `u` tags name it: always the configured public URL + path + query.

    Never derived from the Host header: that would let a header captured by one service be replayed to another
    (the attacker picks the Host). Without a public URL, NIP-98 is refused (`auth_not_configured`)."""
    if not public_url:
        raise FedaiError(ErrorCode.AUTH_NOT_CONFIGURED, not_configured)
    query = f"?{request.url.query}" if request.url.query else ""
    return public_url.rstrip("/") + request.url.path + query


def check_nip98(request: Request, body: bytes, *, url: str, window_s: int) -> Event:
    """The request's `Authorization: Nostr …` event checked against `url`, its method and `body` (every failure a
    typed 401, `fedai.protocol.nip98`). Not yet claimed."""
    header = request.headers.get("authorization", "")
    return verify_auth_header(header, method=request.method, url=url, body=body, window_s=window_s)


@dataclass(frozen=True)
class AdminSigner:
    """An admin API's gate. `keys` are the admin pubkeys (hex); `keys_var` names their setting in messages."""

    keys: frozenset[str]
    keys_var: str  # ROUTER_ADMIN_KEYS or NODE_ADMIN_KEYS
    window_s: int  # FEDAI_NIP98_WINDOW_S
    claim: Claim

    async def signer(self, request: Request, body: bytes, url: str) -> str:
        """The pubkey of the admin who signed this call to `url` (the public URL of the request). No `Nostr`
        Authorization: 401 `unauthorized`; a bad event: a typed 401; a valid signature by another key: 403
        `forbidden` (before any claim, so a stranger fills no replay store); a replay: 409 `replay`."""
        scheme, _, _ = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "nostr":
            raise FedaiError(
                ErrorCode.UNAUTHORIZED,
                f"the admin API needs Authorization: Nostr <NIP-98 event> signed by a key in {self.keys_var}",
            )
        event = check_nip98(request, body, url=url, window_s=self.window_s)
        if event.pubkey not in self.keys:
            raise FedaiError(ErrorCode.FORBIDDEN, f"this key is not an admin key here ({self.keys_var})")
        await self.claim(event)
        return event.pubkey
