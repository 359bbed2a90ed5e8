"""The operator's credentials for the detailed ops views (/status in full, /route/explain, /federation/peers,
/metrics): `Authorization: Bearer <token>` whose sha256 is in ROUTER_ADMIN_TOKEN_SHA256 (compared in constant
time; the token itself is never stored), or a NIP-98 event signed by a key in ROUTER_ADMIN_KEYS."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.service.http import error_response
from fedai_router.openai_api.auth import check_nip98, claim_auth
from fedai_router.service import RouterService

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


async def is_operator(svc: RouterService, request: Request) -> bool:
    """True with valid operator credentials, False with none; wrong credentials raise a typed 401 (or 403 for
    a valid NIP-98 signature by a key that is not an operator's)."""
    header = request.headers.get("authorization", "")
    if not header:
        return False
    scheme, _, credential = header.partition(" ")
    settings = svc.settings
    if scheme.lower() == "bearer":
        if not token_matches(credential.strip(), settings.admin_token_sha256):
            raise FedaiError(ErrorCode.UNAUTHORIZED, "unknown operator token")
        return True
    event = check_nip98(svc, request, b"")
    if event.pubkey not in settings.admin_keys:
        raise FedaiError(ErrorCode.FORBIDDEN, "this key is not an operator key here (ROUTER_ADMIN_KEYS)")
    await claim_auth(svc, event)
    return True


async def require_operator(svc: RouterService, request: Request) -> None:
    if not await is_operator(svc, request):
        raise FedaiError(ErrorCode.UNAUTHORIZED, NEEDED)


def refusal(svc: RouterService, route: str, err: FedaiError) -> Response:
    """A typed error for an ops route, with the challenge header on 401."""
    svc.metrics.requests.labels(route, err.code.value).inc()
    svc.metrics.errors.labels(err.code.value).inc()
    response = error_response(err)
    if err.status == 401:
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response
