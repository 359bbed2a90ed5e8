"""The operator's credentials for the detailed ops views (/status in full, /route/explain, /federation/peers,
/metrics): `Authorization: Bearer <token>` whose sha256 is in ROUTER_ADMIN_TOKEN_SHA256 (compared in constant
time; the token itself is never stored), or a NIP-98 event signed by a key in ROUTER_ADMIN_KEYS."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.service.admin_auth import AdminSigner
from fedai.service.http import error_response
from fedai_router.failure import Failures
from fedai_router.openai_api.auth import Authenticator

CHALLENGE = 'Bearer realm="fedai-operator", Nostr'
NEEDED = (
    "operator credentials required: Authorization: Bearer <operator token> (ROUTER_ADMIN_TOKEN_SHA256) "
    "or a NIP-98 event signed by a key in ROUTER_ADMIN_KEYS"
)


def token_matches(token: str, digests: frozenset[str]) -> bool:
    """True if sha256(token) is one of `digests`; every digest is compared, each in constant time."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    found = False
    for expected in digests:
        found |= hmac.compare_digest(digest, expected)
    return found


@dataclass(frozen=True)
class Operators:
    auth: Authenticator  # NIP-98 checks and claims
    failures: Failures
    token_sha256: frozenset[str] = frozenset()  # ROUTER_ADMIN_TOKEN_SHA256
    keys: frozenset[str] = frozenset()  # ROUTER_ADMIN_KEYS

    async def is_operator(self, request: Request) -> bool:
        """True with valid operator credentials, False with none; wrong credentials raise a typed 401 (or 403 for
        a valid NIP-98 signature by a key that is not an operator's)."""
        header = request.headers.get("authorization", "")
        if not header:
            return False
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            if not token_matches(credential.strip(), self.token_sha256):
                raise FedaiError(ErrorCode.UNAUTHORIZED, "unknown operator token")
            return True
        event = self.auth.check_nip98(request, b"")
        if event.pubkey not in self.keys:
            raise FedaiError(ErrorCode.FORBIDDEN, "this key is not an operator key here (ROUTER_ADMIN_KEYS)")
        await self.auth.claim(event)
        return True

    async def signer(self, request: Request, body: bytes) -> str:
        """The admin API's check (runbooks/admin.md, `fedai.service.admin_auth`): a NIP-98 event for this URL,
        method and body, signed by a key in ROUTER_ADMIN_KEYS and never seen before; returns its pubkey. Operator
        tokens do not open it. Missing or bad: a typed 401; a valid signature by another key: 403; a replay: 409
        `replay`."""
        gate = AdminSigner(self.keys, "ROUTER_ADMIN_KEYS", self.auth.window_s, self.auth.claim)
        return await gate.signer(request, body, self.auth.request_url(request))

    async def require(self, request: Request) -> None:
        if not await self.is_operator(request):
            raise FedaiError(ErrorCode.UNAUTHORIZED, NEEDED)

    def refusal(self, route: str, err: FedaiError) -> Response:
        """A typed error for an ops route, counted, with the challenge header on 401."""
        response = error_response(self.failures.refused(route, err))
        if err.status == 401:
            response.headers["WWW-Authenticate"] = CHALLENGE
        return response
