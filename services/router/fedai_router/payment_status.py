"""`GET /payments/{id}` (docs/payments.md#paying-from-the-command-line): one payment request as its client sees it.

Only the client the payment request names may read it, authenticated by a NIP-98 event signed by that key
(checked against ROUTER_PUBLIC_URL, replay-claimed like every NIP-98 event). No credentials, or credentials that
do not verify, are a 401 before anything is looked up; a valid signature by any other key gets the same 404 as
an id that was never issued, so nobody learns whether someone else's payment exists.

Each payee carries its `refund` once the request was answered: the payee's statement (used, refunded, kept)
and the refund's state; never its destination (docs/payments.md#refunds).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.service.http import error_response, json_response
from fedai_router.failure import Failures
from fedai_router.openai_api.auth import Authenticator
from fedai_router.store.payment_listing import refund_view

ROUTE = "payment_status"
HEX64 = re.compile(r"[0-9a-f]{64}")
UNKNOWN = "no payment request with this id for this client"

_REQUEST = """
SELECT id, quote, client, state, expires_at, created_at, event->>'pubkey' AS router
FROM payment_requests WHERE id = $1
"""
_PAYEES = """
SELECT p.role, p.payee, p.amount_msat, p.payment_hash, p.state, p.updated_at,
       s.used_msat, s.refund_msat, s.kept_msat, f.state AS refund_state, f.amount_msat AS refund_amount
FROM payment_payees p
LEFT JOIN payment_settlements s ON s.payment_hash = p.payment_hash AND s.role = p.role
LEFT JOIN refunds f ON f.payment_hash = p.payment_hash AND f.role = p.role
WHERE p.request_id = $1 ORDER BY p.role, p.payment_hash
"""


def _unix(at: datetime) -> int:
    return int(at.timestamp())


def _document(request: asyncpg.Record, payees: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": request["id"],
        "quote": request["quote"],
        "client": request["client"],
        "router": request["router"],
        "state": request["state"],
        "expires_at": _unix(request["expires_at"]),
        "created_at": _unix(request["created_at"]),
        "total_msat": sum(int(p["amount_msat"]) for p in payees),
        "payees": [
            {
                "role": p["role"],
                "payee": p["payee"],
                "amount_msat": int(p["amount_msat"]),
                "payment_hash": p["payment_hash"],
                "state": p["state"],
                "updated_at": _unix(p["updated_at"]),
                "refund": refund_view(p),
            }
            for p in payees
        ],
    }


class PaymentStatus:
    """The handler of `GET /payments/{payment_id}`."""

    def __init__(self, pool: asyncpg.Pool, auth: Authenticator, failures: Failures) -> None:
        self.pool = pool
        self.auth = auth
        self.failures = failures

    async def handle(self, request: Request) -> Response:
        try:
            document = await self._lookup(request)
        except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
            response = error_response(self.failures.refused(ROUTE, exc))
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = "Nostr"
            return response
        return json_response(document)

    async def _lookup(self, request: Request) -> dict[str, Any]:
        if not request.headers.get("authorization"):
            raise FedaiError(ErrorCode.UNAUTHORIZED, "send Authorization: Nostr <NIP-98 event> signed by your key")
        event = self.auth.check_nip98(request, b"")
        await self.auth.claim(event)
        payment_id = str(request.path_params["payment_id"])
        row = await self.pool.fetchrow(_REQUEST, payment_id) if HEX64.fullmatch(payment_id) else None
        if row is None or row["client"] != event.pubkey:
            raise FedaiError(ErrorCode.NOT_FOUND, UNKNOWN)
        return _document(row, await self.pool.fetch(_PAYEES, payment_id))
