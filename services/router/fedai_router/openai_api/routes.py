"""OpenAI-compatible handlers. A call is authenticated (NIP-98 or API key), mapped to an InferenceRequest by
the same pure function clients verify with, and served by the same scheduler, dispatch and metering as
/infer; the answer carries OpenAI's shape plus a `fedai` field with the signed chain."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, InferenceResponse, StreamChunk, decode_payload
from fedai.protocol.openai_map import chat_request, completion_request
from fedai.service.http import JSON, read_body
from fedai_router.dispatch import Origin
from fedai_router.failure import typed_failure
from fedai_router.infer import answer_served, plan, unless_served
from fedai_router.openai_api.auth import Caller, authenticate
from fedai_router.openai_api.shapes import Completion, error_body, fedai_field, sse_data
from fedai_router.service import RouterService
from fedai_router.store.chains import load_chain, save_chain
from fedai_router.streaming import stream_response
from fedai_router.verify import Verified

_encode = msgspec.json.Encoder().encode


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(document), status_code=status, media_type=JSON, headers=headers)


def _error(svc: RouterService, route: str, err: FedaiError) -> Response:
    svc.metrics.requests.labels(route, err.code.value).inc()
    svc.metrics.errors.labels(err.code.value).inc()
    headers = {}
    if err.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_ms / 1000)))
    if err.status == 401:  # every NIP-98 or API-key failure (NIP-98: "401 if any of the checks fail")
        headers["WWW-Authenticate"] = 'Nostr, Bearer realm="fedai"'
    return _json(error_body(err), err.status, headers)


class OpenAISink:
    """Writes a relayed stream as OpenAI chunks (`data: {...}`), the fedai chain in the last one, then [DONE]."""

    def __init__(self, svc: RouterService, completion: Completion, request: Event, include_usage: bool) -> None:
        self.svc, self.completion, self.request, self.include_usage = svc, completion, request, include_usage

    def chunk(self, chunk: StreamChunk) -> bytes:
        return sse_data(self.completion.chunk(chunk))

    def done(self, answer: Event, verified: Verified) -> bytes:
        fedai = fedai_field(self.svc.pubkey, self.request, answer, verified.record, answer_node(answer))
        chunks = self.completion.last_chunks(verified, fedai, self.include_usage)
        return b"".join(sse_data(c) for c in chunks) + sse_data("[DONE]")

    def error(self, err: FedaiError) -> bytes:
        return sse_data(error_body(err))


def answer_node(answer: Event) -> str:
    node = msgspec.json.decode(answer.content).get("node", "")
    return str(node)


async def _call(svc: RouterService, request: Request, route: str) -> tuple[Caller, InferenceRequest, dict[str, Any]]:
    body = await read_body(request, svc.settings.max_request_bytes)
    caller = await authenticate(svc, request, body)
    document = decode_json(body)  # depth-bounded: `[[[[…]]]]` is a 400, not a RecursionError
    payload = chat_request(document) if route == "chat" else completion_request(document)
    return caller, payload, document


async def complete(svc: RouterService, request: Request, kind: str) -> Response:
    """`POST /v1/chat/completions` (kind "chat") and `POST /v1/completions` (kind "text")."""
    route = "openai_chat" if kind == "chat" else "openai_completions"
    try:
        caller, payload, document = await _call(svc, request, kind)
        # the event that asked: the caller's NIP-98 authorization, or the router's own record of an API-key call
        asked = caller.auth_event or seal(svc.keys, Kind.INFER_REQUEST, payload, to=svc.pubkey, nonce=True,
                                          extra_tags=[["client", caller.client]])  # fmt: skip
        origin = Origin(caller.client, asked.id)
        p = await plan(svc, caller.client, payload)
        completion = Completion(kind, origin.id, payload.model)
        if payload.stream:
            options = document.get("stream_options") or {}
            sink = OpenAISink(svc, completion, asked, bool(isinstance(options, dict) and options.get("include_usage")))

            async def keep(answer: Event) -> None:
                await save_chain(svc.pool, origin.id, caller.client, asked, answer)

            svc.metrics.requests.labels(route, "ok").inc()
            return stream_response(svc, origin, payload, p, sink, on_answer=keep)
        served = await unless_served(
            svc, p.quote, lambda: svc.dispatcher.serve(origin, payload, p.candidates, limits=p.limits)
        )
        answer = await answer_served(svc, origin, served)
        await save_chain(svc.pool, origin.id, caller.client, asked, answer)
    except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
        return _error(svc, route, typed_failure(exc, route))
    result = decode_payload(served.response.content, InferenceResponse)
    fedai = fedai_field(svc.pubkey, asked, answer, served.record, served.node.pubkey)
    body = completion.full(result, served.record, fedai)
    svc.metrics.requests.labels(route, "ok").inc()
    return _json(body, headers={"X-Fedai-Chain-Id": answer.id})


async def models(svc: RouterService, _: Request) -> Response:
    """Every model name the federation can serve now (fresh, not cooling down), with the cheapest pricing."""
    now = time.time()
    data = []
    for name, table in sorted(svc.registry.tables.items()):
        live = [(node, info) for _, node, info in table.rows()
                if svc.node_is_fresh(node.last_seen, node.heartbeat, now)]  # fmt: skip
        if not live:
            continue
        data.append({
            "id": name, "object": "model", "created": 0, "owned_by": "fedai",
            "fedai": {
                "nodes": len(live),
                "canonical": sorted({info.id for _, info in live}),
                "context_window": max(info.context_window for _, info in live),
                "pricing": {"unit": "msat_per_1k_tokens",
                            "input_msat": min(info.pricing.input_msat for _, info in live),
                            "output_msat": min(info.pricing.output_msat for _, info in live)},
            },
        })  # fmt: skip
    return _json({"object": "list", "data": data})


async def chain(svc: RouterService, request: Request) -> Response:
    """`GET /v1/chains/{id}`: the signed chain of one of the caller's completions."""
    try:
        caller = await authenticate(svc, request, b"")
        found = await load_chain(svc.pool, request.path_params["chain_id"])
        if found is None or found["client"] != caller.client:
            raise FedaiError(ErrorCode.NOT_FOUND, "no chain with this id for this client")
    except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
        return _error(svc, "openai_chain", typed_failure(exc, "openai_chain"))
    return _json({"router": svc.pubkey, "client": found["client"], "request": found["request"],
                  "answer": found["answer"]})  # fmt: skip
