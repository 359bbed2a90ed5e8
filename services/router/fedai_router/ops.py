"""Ops endpoints (read-only). Anyone: /health, /ready and the public /status summary (bounded: identity,
version, backpressure, counts; no endpoints, relay URLs or credentials). Operators (fedai_router.admin): the
full /status, /route/explain, /federation/peers and /metrics (public with ROUTER_METRICS_PUBLIC=true)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from fedai.observability.logging import redact_url
from fedai.observability.metrics import metrics_response
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.keys import npub, parse_pubkey
from fedai.protocol.messages import DEFAULT_JOB_TYPE
from fedai.service.http import error_response, json_response
from fedai_router.admin import is_operator, refusal, require_operator
from fedai_router.node_state import NodeState
from fedai_router.scheduler import Demand, explain
from fedai_router.service import RouterService


async def health(svc: RouterService, _: Request) -> Response:
    return json_response({"status": "ok", "pubkey": svc.pubkey, "npub": npub(svc.pubkey), "version": svc.version})


async def ready(svc: RouterService, _: Request) -> Response:
    checks: dict[str, bool] = {}
    try:
        async with asyncio.timeout(2):
            checks["database"] = await svc.pool.fetchval("SELECT 1") == 1
    except (OSError, TimeoutError, asyncpg.PostgresError):
        checks["database"] = False
    if svc.relays is not None:
        checks["relays"] = svc.relays.connected > 0
    ready_now = all(checks.values())
    return json_response({"ready": ready_now, "checks": checks}, status=200 if ready_now else 503)


def node_summary(svc: RouterService, n: NodeState, now: float) -> dict[str, Any]:
    h = n.health
    return {
        "pubkey": n.pubkey,
        "endpoint": n.endpoint,
        "models": [m.id for m in n.descriptor.models],
        "aliases": sorted({a for m in n.descriptor.models for a in m.aliases}),
        "verified": n.verified,
        "source": "heartbeat" if n.heartbeat else "announce",
        "fresh": svc.node_is_fresh(n.last_seen, n.heartbeat, now),
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
    }


async def status(svc: RouterService, request: Request) -> Response:
    """The public summary, or the operator view with operator credentials (wrong ones: 401, not a downgrade)."""
    try:
        operator = await is_operator(svc, request)
    except FedaiError as err:
        return refusal(svc, "status", err)
    return json_response(operator_status(svc) if operator else public_status(svc))


def public_status(svc: RouterService) -> dict[str, Any]:
    """What anyone may see: O(1) to build, a few hundred bytes whatever the fleet."""
    counts = svc.node_counts
    relays = svc.relays
    return {
        "view": "public",
        "pubkey": svc.pubkey,
        "npub": npub(svc.pubkey),
        "version": svc.version,
        "uptime_s": round(time.time() - svc.started_at, 1),
        "backpressure": svc.backpressure,
        "nodes": {"fresh": counts.get("fresh", 0), "total": counts.get("fresh", 0) + counts.get("stale", 0)},
        "models": len(svc.registry.tables),
        "relays": {"configured": len(relays.urls), "connected": relays.connected} if relays is not None else None,
        "peers": len(svc.peers.known()),
    }


def operator_status(svc: RouterService) -> dict[str, Any]:
    now = time.time()
    nodes = [node_summary(svc, n, now) for n in sorted(svc.registry.nodes.values(), key=lambda n: n.pubkey)]
    relays = svc.relays.status() if svc.relays is not None else {}
    return {
        "view": "operator",
        "pubkey": svc.pubkey,
        "version": svc.version,
        "uptime_s": round(now - svc.started_at, 1),
        "nodes": nodes,
        "relays": {redact_url(url): connected for url, connected in relays.items()},
        "federation": federation_summary(svc, now),
    }


def federation_summary(svc: RouterService, now: float) -> dict[str, Any]:
    load = svc.announcer.load
    return {
        "backpressure": svc.backpressure,
        "utilisation": round(load.utilisation, 4),
        "surge": svc.announcer.surge,
        "peers": svc.peers.summaries(now, detail=False),
    }


async def federation_peers(svc: RouterService, request: Request) -> Response:
    """`GET /federation/peers` (operators): every peer router learned from relays, with its announcements and
    policy state."""
    try:
        await require_operator(svc, request)
    except FedaiError as err:
        return refusal(svc, "federation_peers", err)
    return json_response(svc.peers.summaries(time.time()))


async def metrics(svc: RouterService, request: Request) -> Response:
    """`GET /metrics` (Prometheus): operators only (a scraper sends `Authorization: Bearer <operator token>`),
    unless ROUTER_METRICS_PUBLIC=true."""
    if not svc.settings.metrics_public:
        try:
            await require_operator(svc, request)
        except FedaiError as err:
            return refusal(svc, "metrics", err)
    svc.update_node_gauges()
    return metrics_response(svc.metrics.registry)


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


async def route_explain(svc: RouterService, request: Request) -> Response:
    """`GET /route/explain?model=M[&input_tokens&max_tokens&job_type&max_price_msat&nodes&exclude_nodes]`:
    every node serving M with its filter verdict and, if eligible, its score parts; best first. Operators only."""
    try:
        await require_operator(svc, request)
    except FedaiError as err:
        return refusal(svc, "route_explain", err)
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
    table = svc.registry.tables.get(model)
    nodes = [node for _, node, _ in table.rows()] if table is not None else []
    judged = explain(nodes, demand, now=time.time(), policy=svc.policy)
    policy = svc.policy
    return json_response(
        {
            "demand": {
                "model": demand.model, "input_tokens": demand.input_tokens, "max_tokens": demand.max_tokens,
                "job_type": demand.job_type or DEFAULT_JOB_TYPE, "max_price_msat": demand.max_price_msat,
                "nodes": sorted(demand.pin), "exclude_nodes": sorted(demand.exclude),
            },
            "policy": {
                "weights": {name: getattr(policy.weights, name) for name in policy.weights.__slots__},
                "heartbeat_ttl_s": policy.heartbeat_ttl_s, "announce_ttl_s": policy.announce_ttl_s,
                "random_top_n": policy.random_top_n,
            },
            "eligible": sum(1 for e in judged if e.verdict == "ok"),
            "nodes": [e.to_dict() for e in judged],
        }
    )  # fmt: skip
