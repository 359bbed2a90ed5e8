"""The node's admin API under /admin/api (runbooks/admin.md#node), on only with NODE_ADMIN_KEYS: status, drain and
resume, prices per model, the routers it accepts, earnings (read-only) and the audit log. Every call is a NIP-98
event for NODE_ENDPOINT + path, signed by a NODE_ADMIN_KEYS key and claimed in the replay store
(`fedai.service.admin_auth`); every change is written to NODE_DB_URL with its audit row, then applied at once and
told to the routers (a heartbeat to each, and an announcement on the relays)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import fedai
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.event import Event
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.keys import parse_pubkey
from fedai.protocol.messages import MAX_RATE_MSAT, Pricing
from fedai.protocol.replay import claim_or_raise
from fedai.service.admin_auth import AdminSigner, public_request_url
from fedai.service.drain import Drain
from fedai.service.http import error_response, json_response, read_body
from fedai_node import admin_store as store
from fedai_node.admin_store import Change
from fedai_node.admission import Admission
from fedai_node.catalog import ModelCatalog
from fedai_node.config import NodeSettings
from fedai_node.lifecycle import NodeLifecycle
from fedai_node.prices import NodePrices
from fedai_node.runners.base import Runner
from fedai_node.trusted_routers import TrustedRouters

log = logging.getLogger("fedai_node.admin")

PREFIX = "/admin/api/"
MAX_BODY = 4 * 1024
PAGE_MAX = 200
HEALTH_TIMEOUT_S = 2.0
ROUTER_RULES = {"allow": "allow", "block": "block", "clear": None}
CHALLENGE = "Nostr"
NOT_CONFIGURED = "the node's admin API needs NODE_ENDPOINT: the URL NIP-98 events name"
Handler = Callable[[Request, bytes, str], Awaitable[Any]]


def json_object(body: bytes) -> dict[str, Any]:
    value = decode_json(body) if body else {}
    if not isinstance(value, dict):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object")
    return value


def rate(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RATE_MSAT:
        raise FedaiError(
            ErrorCode.INVALID_REQUEST, f"{name} must be an integer from 0 to {MAX_RATE_MSAT} (msat per 1k)"
        )
    return value


def price_body(body: bytes) -> Pricing | None:
    """`{"input_msat": int, "output_msat": int}`, each within NODE_PRICE_*'s bounds; both null: back to
    NODE_PRICE_*."""
    fields = json_object(body)
    if set(fields) != {"input_msat", "output_msat"}:
        raise FedaiError(
            ErrorCode.INVALID_REQUEST, "send input_msat and output_msat (msat per 1k tokens), nothing else"
        )
    if fields["input_msat"] is None and fields["output_msat"] is None:
        return None
    return Pricing(input_msat=rate(fields, "input_msat"), output_msat=rate(fields, "output_msat"))


def page(request: Request) -> tuple[int, int | None]:
    raw = request.query_params.get("limit", "50")
    before = request.query_params.get("before")
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_MAX:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"limit must be an integer from 1 to {PAGE_MAX}")
    if before is not None and not before.isdigit():
        raise FedaiError(ErrorCode.INVALID_REQUEST, "before must be the `next` value of a previous page")
    return int(raw), int(before) if before else None


def pricing_doc(pricing: Pricing) -> dict[str, int]:
    return {"input_msat": pricing.input_msat, "output_msat": pricing.output_msat}


@dataclass
class NodeAdminApi:
    settings: NodeSettings
    runner: Runner
    catalog: ModelCatalog
    admission: Admission
    lifecycle: NodeLifecycle
    prices: NodePrices
    trusted: TrustedRouters
    drain: Drain
    _prices_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one price change told to routers at a time

    @property
    def node(self) -> str:
        return self.settings.keys.pubkey

    @property
    def pool(self) -> asyncpg.Pool:
        pool = self.lifecycle.db
        if pool is None:  # NODE_ADMIN_KEYS needs NODE_DB_URL (config); the pool opens at start
            raise FedaiError(ErrorCode.UNAVAILABLE, "the node's database is not open yet", retry_after_ms=1000)
        return pool

    def routes(self) -> list[BaseRoute]:
        e = self._endpoint
        return [
            Route(PREFIX + "status", e(self.status), methods=["GET"]),
            Route(PREFIX + "drain", e(self.start_drain), methods=["POST"]),
            Route(PREFIX + "resume", e(self.resume), methods=["POST"]),
            Route(PREFIX + "prices", e(self.list_prices), methods=["GET"]),
            Route(PREFIX + "prices/{model:path}", e(self.set_price), methods=["POST"]),
            Route(PREFIX + "routers", e(self.list_routers), methods=["GET"]),
            Route(PREFIX + "routers/{pubkey}/{action}", e(self.router_action), methods=["POST"]),
            Route(PREFIX + "earnings", e(self.earnings), methods=["GET"]),
            Route(PREFIX + "audit", e(self.audit), methods=["GET"]),
        ]

    async def _claim(self, event: Event) -> None:
        # kept at least as long as a NIP-98 event is accepted
        await claim_or_raise(self.admission.guard, event, max(self.settings.nip98_window_s, self.settings.clock_skew_s))

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        gate = AdminSigner(self.settings.admin_keys, "NODE_ADMIN_KEYS", self.settings.nip98_window_s, self._claim)
        endpoint_url = self.settings.endpoint

        async def endpoint(request: Request) -> Response:
            try:
                body = await read_body(request, MAX_BODY)
                url = public_request_url(endpoint_url, request, NOT_CONFIGURED)
                actor = await gate.signer(request, body, url)
                answer = await handler(request, body, actor)
                if request.method == "POST":  # who changed what (the path names it; the body is not logged)
                    log.info("admin change", extra={"actor": actor, "path": request.url.path})
                return json_response(answer)
            except FedaiError as err:
                response = error_response(err)
                if err.status == 401:
                    response.headers["WWW-Authenticate"] = CHALLENGE
                return response
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:  # the database: a typed 503, the type logged
                log.warning("admin call failed", extra={"error_type": type(exc).__name__})
                return error_response(FedaiError(ErrorCode.UNAVAILABLE, "the node's database failed; try again"))
            except Exception as exc:  # noqa: BLE001 - a bug: a typed 500, logged by type (its text may carry data)
                log.error("admin call failed", extra={"error_type": type(exc).__name__, "path": request.url.path})
                return error_response(FedaiError(ErrorCode.INTERNAL, "internal error"))

        return endpoint

    def _change(self, actor: str, action: str, target: str) -> Change:
        return Change(self.node, actor, action, target)

    async def status(self, _request: Request, _body: bytes, _actor: str) -> Any:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                runner_ok = await self.runner.health()
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"; the type is logged
            log.warning("runner health check failed", extra={"error_type": type(exc).__name__})
            runner_ok = False
        models = sorted(m.id for m in self.catalog.served())
        return {
            "pubkey": self.node,
            "version": fedai.__version__,
            "endpoint": self.settings.endpoint,
            "runner": self.runner.name,
            "runner_ok": runner_ok,
            "models": [{"id": m, "pricing": pricing_doc(self.prices.advertised(m))} for m in models],
            "in_flight": self.admission.in_flight.count,
            "capacity": self.admission.in_flight.limit,
            "draining": self.drain.draining,
            "routers": self.lifecycle.heartbeat_summary(),
            "accepted_routers": list(self.trusted),
        }

    async def start_drain(self, _request: Request, _body: bytes, actor: str) -> Any:
        """New requests refused (503) and every router told at once; requests in flight finish. Kept across a
        restart until `resume`."""
        await store.set_drained(self.pool, self._change(actor, "node.drain", self.node), True)
        await self.drain.begin()
        return {"draining": True, "in_flight": self.drain.in_flight}

    async def resume(self, _request: Request, _body: bytes, actor: str) -> Any:
        if self.drain.stopping:
            raise FedaiError(ErrorCode.UNAVAILABLE, "the node is stopping (SIGTERM): it is not resumed")
        await store.set_drained(self.pool, self._change(actor, "node.resume", self.node), False)
        await self.drain.resume()
        return {"draining": False, "in_flight": self.drain.in_flight}

    async def list_prices(self, _request: Request, _body: bytes, _actor: str) -> Any:
        served = sorted(m.id for m in self.catalog.served())
        return {
            "env": pricing_doc(self.prices.default),
            "models": {m: pricing_doc(self.prices.advertised(m)) for m in served},
            "set": {m: pricing_doc(p) for m, p in sorted(self.prices.overrides.items())},
        }

    async def set_price(self, request: Request, body: bytes, actor: str) -> Any:
        """`POST /admin/api/prices/{model}` with `{"input_msat", "output_msat"}` (both null: back to NODE_PRICE_*).
        Heartbeats and announcements carry it at once; a raise is charged once routers have heard it
        (`fedai_node.prices`)."""
        model = request.path_params["model"]
        if model not in {m.id for m in self.catalog.served()} and model not in self.prices.overrides:
            raise FedaiError(ErrorCode.NOT_FOUND, f"this node serves no model {model!r} (GET /admin/api/prices)")
        pricing = price_body(body)
        action = "price.reset" if pricing is None else "price.set"
        async with self._prices_lock:  # settle only what the routers were told
            await store.set_price(self.pool, self._change(actor, action, model), pricing)
            self.prices.set(model, pricing)
            results = await self.lifecycle.tell_routers()
            self.prices.settle()
        return {"model": model, "pricing": pricing_doc(self.prices.advertised(model)), "routers_told": results}

    async def list_routers(self, _request: Request, _body: bytes, _actor: str) -> Any:
        return {
            "configured": sorted(self.trusted.configured),
            "rules": dict(sorted(self.trusted.rules.items())),
            "accepted": list(self.trusted),
        }

    async def router_action(self, request: Request, _body: bytes, actor: str) -> Any:
        """Allow a router beside ROUTER_PUBLIC_KEY, block one (its requests and heartbeat ACKs refused), or clear
        the rule."""
        try:
            router = parse_pubkey(request.path_params["pubkey"])
        except KeyFormatError as exc:
            raise FedaiError(ErrorCode.INVALID_REQUEST, f"pubkey: {exc}") from None
        action = request.path_params["action"]
        if action not in ROUTER_RULES:
            raise FedaiError(ErrorCode.NOT_FOUND, f"no router action {action!r} (allow, block, clear)")
        rule = ROUTER_RULES[action]
        await store.set_router(self.pool, self._change(actor, f"router.{action}", router), rule)
        rules = dict(self.trusted.rules)
        if rule is None:
            rules.pop(router, None)
        else:
            rules[router] = rule
        self.trusted.apply(rules)
        return {"pubkey": router, "rule": rule, "accepted": router in self.trusted}

    async def earnings(self, _request: Request, _body: bytes, _actor: str) -> Any:
        summary = await store.earnings(self.pool)
        return {"wallet": self.settings.wallet is not None, "at": time.time(), **summary}

    async def audit(self, request: Request, _body: bytes, _actor: str) -> Any:
        limit, before = page(request)
        items, cursor = await store.list_audit(self.pool, self.node, limit=limit, before=before)
        return {"entries": items, "next": str(cursor) if cursor else None}
