"""The admin API under /admin/api (runbooks/admin.md): nodes (drain, ban), peer rules (allow, block, mute), API
keys (create, revoke), the router fee, metering records, federation receipts, earnings, payment requests and the
audit log. Every call is a NIP-98 event signed by
a ROUTER_ADMIN_KEYS key (`Operators.signer`); every change is written to Postgres with its audit row, applied
here at once and by the other replicas at their next admin sync."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fedai.payments import earnings
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.keys import parse_pubkey
from fedai.service.http import json_response, read_body
from fedai_router.admin import Operators
from fedai_router.admin_state import AdminState
from fedai_router.node_state import NodeState
from fedai_router.ops import FederationView, node_summary
from fedai_router.pricing import MAX_FEE_BASE_MSAT
from fedai_router.scheduler import Policy
from fedai_router.store import admin as store
from fedai_router.store.admin import Change
from fedai_router.store.payment_listing import REQUEST_STATES, list_payments

MAX_BODY = 16 * 1024
MAX_LABEL = 64
PAGE_MAX = 200
NODE_ACTIONS = {
    "drain": ("drained", True),
    "undrain": ("drained", False),
    "ban": ("banned", True),
    "unban": ("banned", False),
}
PEER_ACTIONS = {"allow": "allow", "block": "block", "mute": "mute", "clear": None}
Handler = Callable[[Request, bytes, str], Awaitable[Any]]


def pubkey_param(value: str, name: str = "pubkey") -> str:
    try:
        return parse_pubkey(value)
    except KeyFormatError as exc:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"{name}: {exc}") from None


def page_params(request: Request) -> tuple[int, str | None]:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_MAX:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"limit must be an integer from 1 to {PAGE_MAX}")
    return int(raw), request.query_params.get("before") or None


def json_object(body: bytes) -> dict[str, Any]:
    value = decode_json(body) if body else {}
    if not isinstance(value, dict):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object")
    return value


def fee_value(body: dict[str, Any], name: str, maximum: int) -> int | None:
    value = body[name]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum):
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"{name} must be null or an integer from 0 to {maximum}")
    return value


def metering_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if raw is None:
        return None
    at, _, request_id = raw.partition("|")
    try:
        return datetime.fromisoformat(at), request_id
    except ValueError:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "before must be the `next` value of a previous page") from None


def days_param(request: Request) -> int:
    raw = request.query_params.get("days", "30")
    if not raw.isdigit() or not 1 <= int(raw) <= earnings.MAX_DAYS:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"days must be an integer from 1 to {earnings.MAX_DAYS}")
    return int(raw)


def state_param(request: Request) -> str | None:
    state = request.query_params.get("state") or None
    if state is not None and state not in REQUEST_STATES:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"state must be one of {', '.join(REQUEST_STATES)}")
    return state


async def earnings_document(pool: asyncpg.Pool, days: int) -> dict[str, Any]:
    """The router's earnings over the last `days` UTC days (docs/payments.md#earnings): rows by day, model and
    role, and per role the net total and the refunds paid."""
    rows = await earnings.earnings_rows(pool, "router", days)
    totals = earnings.totals(rows)
    return {"days": days, "rows": rows, "total_msat": totals, "refunded_msat": earnings.totals(rows, "refunded_msat")}


class AdminApi:
    def __init__(
        self,
        *,
        operators: Operators,
        state: AdminState,
        pool: asyncpg.Pool,
        nodes: Mapping[str, NodeState],
        federation: FederationView,
        policy: Policy,
    ) -> None:
        self.operators = operators
        self.state = state
        self.pool = pool
        self.nodes = nodes
        self.federation = federation
        self.policy = policy

    def routes(self) -> list[BaseRoute]:
        e = self._endpoint
        return [
            Route("/admin/api/nodes", e("admin_nodes", self.list_nodes), methods=["GET"]),
            Route("/admin/api/nodes/{pubkey}/{action}", e("admin_node", self.node_action), methods=["POST"]),
            Route("/admin/api/peers", e("admin_peers", self.list_peers), methods=["GET"]),
            Route("/admin/api/peers/{pubkey}/{action}", e("admin_peer", self.peer_action), methods=["POST"]),
            Route("/admin/api/apikeys", e("admin_apikeys", self.list_keys), methods=["GET"]),
            Route("/admin/api/apikeys", e("admin_apikeys", self.create_key), methods=["POST"]),
            Route("/admin/api/apikeys/{key_id}/revoke", e("admin_apikeys", self.revoke_key), methods=["POST"]),
            Route("/admin/api/fees", e("admin_fees", self.get_fees), methods=["GET"]),
            Route("/admin/api/fees", e("admin_fees", self.set_fees), methods=["POST"]),
            Route("/admin/api/metering", e("admin_metering", self.metering), methods=["GET"]),
            Route("/admin/api/receipts", e("admin_receipts", self.receipts), methods=["GET"]),
            Route("/admin/api/earnings", e("admin_earnings", self.earnings), methods=["GET"]),
            Route("/admin/api/payments", e("admin_payments", self.payments), methods=["GET"]),
            Route("/admin/api/audit", e("admin_audit", self.audit), methods=["GET"]),
        ]

    def _endpoint(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        operators = self.operators

        async def endpoint(request: Request) -> Response:
            try:
                body = await read_body(request, MAX_BODY)
                actor = await operators.signer(request, body)
                return json_response(await handler(request, body, actor))
            except Exception as exc:  # noqa: BLE001 - FedaiError as is, a database outage a typed 503, a bug a 500
                return operators.refusal(route, operators.failures.refused(route, exc))

        return endpoint

    async def list_nodes(self, _request: Request, _body: bytes, _actor: str) -> Any:
        now, snap = time.time(), self.state.snapshot
        listed = []
        for node in sorted(self.nodes.values(), key=lambda n: n.pubkey):
            row = node_summary(node, now, self.policy)
            row.update(drained=node.pubkey in snap.drained, banned=node.pubkey in snap.banned)
            listed.append(row)
        known = set(self.nodes)
        absent = sorted((snap.drained | snap.banned) - known)
        held = [{"pubkey": k, "drained": k in snap.drained, "banned": k in snap.banned} for k in absent]
        return {"nodes": listed, "held_unregistered": held}

    async def node_action(self, request: Request, _body: bytes, actor: str) -> Any:
        pubkey = pubkey_param(request.path_params["pubkey"])
        action = request.path_params["action"]
        if action not in NODE_ACTIONS:
            raise FedaiError(ErrorCode.NOT_FOUND, f"no node action {action!r} (drain, undrain, ban, unban)")
        flag, value = NODE_ACTIONS[action]
        flags = await store.set_node_flag(self.pool, Change(actor, f"node.{action}", pubkey), flag, value)
        await self.state.reload()
        return {"pubkey": pubkey, **flags}

    async def list_peers(self, _request: Request, _body: bytes, _actor: str) -> Any:
        return {"peers": self.federation.peer_summaries(time.time()), "rules": self.state.snapshot.peers}

    async def peer_action(self, request: Request, _body: bytes, actor: str) -> Any:
        pubkey = pubkey_param(request.path_params["pubkey"])
        action = request.path_params["action"]
        if action not in PEER_ACTIONS:
            raise FedaiError(ErrorCode.NOT_FOUND, f"no peer action {action!r} (allow, block, mute, clear)")
        await store.set_peer(self.pool, Change(actor, f"peer.{action}", pubkey), PEER_ACTIONS[action])
        await self.state.reload()
        return {"pubkey": pubkey, "rule": PEER_ACTIONS[action]}

    async def list_keys(self, _request: Request, _body: bytes, _actor: str) -> Any:
        return {"api_keys": await store.list_api_keys(self.pool)}

    async def create_key(self, _request: Request, body: bytes, actor: str) -> Any:
        """A new key for the OpenAI edge, shown once in this answer; only its sha256 is stored."""
        fields = json_object(body)
        client = pubkey_param(str(fields.get("client", "")), "client")
        label = fields.get("label", "")
        if not isinstance(label, str) or len(label) > MAX_LABEL:
            raise FedaiError(ErrorCode.INVALID_REQUEST, f"label must be a string of at most {MAX_LABEL} characters")
        key, key_id = "fk-" + secrets.token_urlsafe(32), secrets.token_hex(8)
        digest = hashlib.sha256(key.encode()).hexdigest()
        change = Change(actor, "apikey.create", key_id)
        await store.create_api_key(self.pool, change, digest=digest, client=client, label=label)
        await self.state.reload()
        return {"id": key_id, "key": key, "client": client, "label": label}

    async def revoke_key(self, request: Request, _body: bytes, actor: str) -> Any:
        key_id = request.path_params["key_id"]
        if not await store.revoke_api_key(self.pool, Change(actor, "apikey.revoke", key_id)):
            raise FedaiError(ErrorCode.NOT_FOUND, "no live API key with this id")
        await self.state.reload()
        return {"id": key_id, "revoked": True}

    async def get_fees(self, _request: Request, _body: bytes, _actor: str) -> Any:
        fees = self.state.fees
        return {
            "fee_base_msat": fees.base_msat,
            "fee_ppm": fees.ppm,
            "env": {"fee_base_msat": fees.env_base_msat, "fee_ppm": fees.env_ppm},
            "set": self.state.snapshot.settings,
        }

    async def set_fees(self, request: Request, body: bytes, actor: str) -> Any:
        """`{"fee_base_msat": int | null, "fee_ppm": int | null}`: null goes back to the environment's; a field
        left out is unchanged. Applies to quotes (docs/payments.md); federation bids keep ROUTER_FEE_*."""
        fields = json_object(body)
        unknown = set(fields) - {"fee_base_msat", "fee_ppm"}
        if unknown or not fields:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "send fee_base_msat and/or fee_ppm (integers, or null)")
        values: dict[str, int | None] = {}
        if "fee_base_msat" in fields:
            values["fee_base_msat"] = fee_value(fields, "fee_base_msat", MAX_FEE_BASE_MSAT)
        if "fee_ppm" in fields:
            values["fee_ppm"] = fee_value(fields, "fee_ppm", 1_000_000)
        await store.set_settings(self.pool, Change(actor, "fee.set", "router"), values)
        await self.state.reload()
        return await self.get_fees(request, body, actor)

    async def metering(self, request: Request, _body: bytes, _actor: str) -> Any:
        limit, before = page_params(request)
        items, cursor = await store.list_metering(self.pool, limit=limit, before=metering_cursor(before))
        return {"records": items, "next": f"{cursor[0].isoformat()}|{cursor[1]}" if cursor else None}

    async def receipts(self, request: Request, _body: bytes, _actor: str) -> Any:
        limit, before = page_params(request)
        items, cursor = await store.list_receipts(self.pool, limit=limit, before=metering_cursor(before))
        return {"jobs": items, "next": f"{cursor[0].isoformat()}|{cursor[1]}" if cursor else None}

    async def earnings(self, request: Request, _body: bytes, _actor: str) -> Any:
        return await earnings_document(self.pool, days_param(request))

    async def payments(self, request: Request, _body: bytes, _actor: str) -> Any:
        limit, before = page_params(request)
        state, cursor = state_param(request), metering_cursor(before)
        items, after = await list_payments(self.pool, limit=limit, before=cursor, state=state)
        return {"payments": items, "next": f"{after[0].isoformat()}|{after[1]}" if after else None}

    async def audit(self, request: Request, _body: bytes, _actor: str) -> Any:
        limit, before = page_params(request)
        if before is not None and not before.isdigit():
            raise FedaiError(ErrorCode.INVALID_REQUEST, "before must be the `next` value of a previous page")
        items, cursor = await store.list_audit(self.pool, limit=limit, before=int(before) if before else None)
        return {"entries": items, "next": str(cursor) if cursor else None}
