"""Ops endpoints (read-only). Anyone: /health, /ready and the public /status summary (bounded: identity,
version, backpressure, counts; no endpoints, relay URLs or credentials). Operators (fedai_router.admin): the
full /status, /route/explain, /federation/peers and /metrics (public with ROUTER_METRICS_PUBLIC=true)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from fedai.nostr import RelayPool
from fedai.observability.logging import redact_url
from fedai.observability.metrics import metrics_response
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.keys import npub, parse_pubkey
from fedai.protocol.messages import DEFAULT_JOB_TYPE
from fedai.service.http import error_response, json_response
from fedai_router.admin import Operators
from fedai_router.node_counts import NodeCounts
from fedai_router.node_state import NodeState
from fedai_router.scheduler import Demand, ModelTable, Policy, explain


class FederationView(Protocol):
    """What the ops views show of federation (`fedai_router.federation.Federation`)."""

    @property
    def backpressure(self) -> str: ...

    @property
    def utilisation(self) -> float: ...

    @property
    def surge(self) -> float: ...

    def known_peers(self) -> int: ...

    def peer_summaries(self, now: float, *, detail: bool = True) -> list[dict[str, Any]]: ...


def node_summary(n: NodeState, now: float, policy: Policy) -> dict[str, Any]:
    h = n.health
    return {
        "pubkey": n.pubkey,
        "endpoint": n.endpoint,
        "models": [m.id for m in n.descriptor.models],
        "aliases": sorted({a for m in n.descriptor.models for a in m.aliases}),
        "verified": n.verified,
        "source": "heartbeat" if n.heartbeat else "announce",
        "fresh": policy.fresh(n.last_seen, n.heartbeat, now),
        "last_seen_s": round(now - n.last_seen, 1),
        "in_flight": n.in_flight,
        "load": n.load,
        "capacity": n.capacity,
        "cooldown_s": round(max(0.0, n.cooldown_until - now), 1),
        "consecutive_failures": h.consecutive_failures,
        "last_failure": h.last_failure,
        "reliability": round(h.reliability, 4),
        "window": {"successes": h.successes, "failures": h.failures},
        "latency_ms": round(h.latency_ms, 2) if h.latency_ms is not None else None,
        "trust": round(n.trust, 4),
        "held": n.held,  # drained or banned by an operator (runbooks/admin.md)
    }


def _int_param(request: Request, name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer") from None
    if value < minimum:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"{name} must be at least {minimum}")
    return value


def _keys_param(request: Request, name: str) -> frozenset[str]:
    raw = request.query_params.get(name, "")
    try:
        return frozenset(parse_pubkey(p) for p in raw.split(",") if p.strip())
    except KeyFormatError as exc:
        raise FedaiError(ErrorCode.INVALID_REQUEST, f"{name}: {exc}") from None


class Ops:
    def __init__(
        self,
        *,
        pubkey: str,
        version: str,
        started_at: float,
        pool: asyncpg.Pool,
        relays: RelayPool | None,
        nodes: Mapping[str, NodeState],
        tables: Mapping[str, ModelTable],
        counts: NodeCounts,
        federation: FederationView,
        policy: Policy,
        operators: Operators,
        metrics: CollectorRegistry,
        metrics_public: bool,
    ) -> None:
        self.pubkey = pubkey
        self.version = version
        self.started_at = started_at  # unix s
        self.pool = pool  # /ready asks the database
        self.relays = relays  # None without ROUTER_RELAYS
        self.nodes = nodes  # the registry's nodes, by pubkey
        self.tables = tables  # the registry's scheduler tables, by model name
        self.counts = counts
        self.federation = federation
        self.policy = policy
        self.operators = operators
        self.metrics = metrics
        self.metrics_public = metrics_public  # ROUTER_METRICS_PUBLIC

    async def health(self, _: Request) -> Response:
        return json_response(
            {"status": "ok", "pubkey": self.pubkey, "npub": npub(self.pubkey), "version": self.version}
        )

    async def ready(self, _: Request) -> Response:
        checks: dict[str, bool] = {}
        try:
            async with asyncio.timeout(2):
                checks["database"] = await self.pool.fetchval("SELECT 1") == 1
        except (OSError, TimeoutError, asyncpg.PostgresError):
            checks["database"] = False
        if self.relays is not None:
            checks["relays"] = self.relays.connected > 0
        ready_now = all(checks.values())
        return json_response({"ready": ready_now, "checks": checks}, status=200 if ready_now else 503)

    async def status(self, request: Request) -> Response:
        """The public summary, or the operator view with operator credentials (wrong ones: 401, not a downgrade)."""
        try:
            operator = await self.operators.is_operator(request)
        except FedaiError as err:
            return self.operators.refusal("status", err)
        return json_response(self.operator_status() if operator else self.public_status())

    def public_status(self) -> dict[str, Any]:
        """What anyone may see: O(1) to build, a few hundred bytes whatever the fleet."""
        counts = self.counts.counts
        relays = self.relays
        return {
            "view": "public",
            "pubkey": self.pubkey,
            "npub": npub(self.pubkey),
            "version": self.version,
            "uptime_s": round(time.time() - self.started_at, 1),
            "backpressure": self.federation.backpressure,
            "nodes": {"fresh": counts.get("fresh", 0), "total": counts.get("fresh", 0) + counts.get("stale", 0)},
            "models": len(self.tables),
            "relays": {"configured": len(relays.urls), "connected": relays.connected} if relays is not None else None,
            "peers": self.federation.known_peers(),
        }

    def operator_status(self) -> dict[str, Any]:
        now = time.time()
        nodes = [node_summary(n, now, self.policy) for n in sorted(self.nodes.values(), key=lambda n: n.pubkey)]
        relays = self.relays.status() if self.relays is not None else {}
        federation = self.federation
        return {
            "view": "operator",
            "pubkey": self.pubkey,
            "version": self.version,
            "uptime_s": round(now - self.started_at, 1),
            "nodes": nodes,
            "relays": {redact_url(url): connected for url, connected in relays.items()},
            "federation": {
                "backpressure": federation.backpressure,
                "utilisation": round(federation.utilisation, 4),
                "surge": federation.surge,
                "peers": federation.peer_summaries(now, detail=False),
            },
        }

    async def federation_peers(self, request: Request) -> Response:
        """`GET /federation/peers` (operators): every peer router learned from relays, with its announcements and
        policy state."""
        try:
            await self.operators.require(request)
        except FedaiError as err:
            return self.operators.refusal("federation_peers", err)
        return json_response(self.federation.peer_summaries(time.time()))

    async def metrics_page(self, request: Request) -> Response:
        """`GET /metrics` (Prometheus): operators only (a scraper sends `Authorization: Bearer <operator token>`),
        unless ROUTER_METRICS_PUBLIC=true."""
        if not self.metrics_public:
            try:
                await self.operators.require(request)
            except FedaiError as err:
                return self.operators.refusal("metrics", err)
        self.counts.update()
        return metrics_response(self.metrics)

    async def route_explain(self, request: Request) -> Response:
        """`GET /route/explain?model=M[&input_tokens&max_tokens&job_type&max_price_msat&nodes&exclude_nodes]`:
        every node serving M with its filter verdict and, if eligible, its score parts; best first. Operators only."""
        try:
            await self.operators.require(request)
        except FedaiError as err:
            return self.operators.refusal("route_explain", err)
        try:
            model = request.query_params.get("model", "").strip()
            if not model:
                raise FedaiError(ErrorCode.INVALID_REQUEST, "model is required")
            demand = Demand(
                model=model,
                input_tokens=_int_param(request, "input_tokens", 0) or 0,
                max_tokens=_int_param(request, "max_tokens", 256, minimum=1) or 256,
                job_type=request.query_params.get("job_type") or None,
                max_price_msat=_int_param(request, "max_price_msat", None),
                pin=_keys_param(request, "nodes"),
                exclude=_keys_param(request, "exclude_nodes"),
            )
        except FedaiError as err:
            return error_response(err)
        table = self.tables.get(model)
        nodes = [node for _, node, _ in table.rows()] if table is not None else []
        judged = explain(nodes, demand, now=time.time(), policy=self.policy)
        policy = self.policy
        return json_response(
            {
                "demand": {
                    "model": demand.model,
                    "input_tokens": demand.input_tokens,
                    "max_tokens": demand.max_tokens,
                    "job_type": demand.job_type or DEFAULT_JOB_TYPE,
                    "max_price_msat": demand.max_price_msat,
                    "nodes": sorted(demand.pin),
                    "exclude_nodes": sorted(demand.exclude),
                },
                "policy": {
                    "weights": {name: getattr(policy.weights, name) for name in policy.weights.__slots__},
                    "heartbeat_ttl_s": policy.heartbeat_ttl_s,
                    "announce_ttl_s": policy.announce_ttl_s,
                    "random_top_n": policy.random_top_n,
                },
                "eligible": sum(1 for e in judged if e.verdict == "ok"),
                "nodes": [e.to_dict() for e in judged],
            }
        )
