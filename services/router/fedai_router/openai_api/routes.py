"""OpenAI-compatible handlers. A call is authenticated (NIP-98 or API key), mapped to an InferenceRequest by
the same pure function clients verify with, and served by the same planning, dispatch and completion as
/infer; the answer carries OpenAI's shape plus a `fedai` field with the signed chain. On a paying router, a paid
non-streamed call whose quote a peer router won is submitted to that provider, as `/infer` does."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    InferResult,
    MeteringRecord,
    StreamChunk,
    decode_payload,
)
from fedai.protocol.openai_map import chat_request, completion_request
from fedai.service.http import JSON, read_body, retry_after_header
from fedai_router.completion import Completion as Completer
from fedai_router.completion import Origin
from fedai_router.dispatch import Dispatcher, Served
from fedai_router.failure import Failures
from fedai_router.metrics import RouterMetrics
from fedai_router.offloading import WonJob
from fedai_router.openai_api.auth import Authenticator, Caller
from fedai_router.openai_api.paying import EdgePayments
from fedai_router.openai_api.shapes import Completion, error_body, fedai_field, sse_data
from fedai_router.paid import Held, Paid
from fedai_router.paid_offload import PaidOffload
from fedai_router.planning import Plan, Planner
from fedai_router.scheduler import ModelTable, Policy
from fedai_router.store.chains import load_chain, save_chain
from fedai_router.stream_relay import StreamRelay
from fedai_router.verify import Verified

_encode = msgspec.json.Encoder().encode


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(document), status_code=status, media_type=JSON, headers=headers)


def _error(err: FedaiError) -> Response:
    """OpenAI's error shape, with Retry-After, and the auth challenge on 401 (every NIP-98 or API-key failure:
    NIP-98 says "401 if any of the checks fail")."""
    headers = retry_after_header(err)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Nostr, Bearer realm="fedai"'
    return _json(error_body(err), err.status, headers)


@contextmanager
def _naming(payment: dict[str, Any] | None) -> Iterator[None]:
    """A call that failed after the router paid it names the payment in its error (`error.payment`), so the
    client can retry with that proof through `/infer` until the payment request expires: nothing paid is lost."""
    try:
        yield
    except FedaiError as err:
        err.paid_call = payment  # type: ignore[attr-defined]
        raise


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call ready to dispatch: its plan, the request the node gets, and the proof it holds when paid; or, for a
    paid quote a peer router won, the award its provider runs (then no plan)."""

    plan: Plan | None
    request: InferenceRequest
    held: Held | None
    payment: dict[str, Any] | None = None  # a paid call: {quote_id, proof}, for the caller's chain check
    job: WonJob | None = None  # a paid offload (docs/payments.md#federation-settlement)


@dataclass(frozen=True, slots=True)
class Answered:
    """A signed answer and what the OpenAI body shows of it."""

    answer: Event
    response: InferenceResponse
    record: MeteringRecord
    node: str

    @classmethod
    def of(cls, answer: Event) -> Answered:
        """From the answer's own chain (the router's signed answer: its links were verified before it signed)."""
        chain = decode_payload(answer.content, InferResult)
        response = decode_payload(chain.response.content, InferenceResponse)
        return cls(answer, response, decode_payload(chain.metering.content, MeteringRecord), chain.node)


class OpenAISink:
    """Writes a relayed stream as OpenAI chunks (`data: {...}`), the fedai chain in the last one, then [DONE]."""

    def __init__(
        self, router: str, completion: Completion, request: Event, include_usage: bool, payment: Any = None
    ) -> None:
        self.router, self.completion, self.request, self.include_usage = router, completion, request, include_usage
        self.payment = payment

    def chunk(self, chunk: StreamChunk) -> bytes:
        return sse_data(self.completion.chunk(chunk))

    def done(self, answer: Event, verified: Verified) -> bytes:
        fedai = fedai_field(self.router, self.request, answer, verified.record, answer_node(answer), self.payment)
        chunks = self.completion.last_chunks(verified, fedai, self.include_usage)
        return b"".join(sse_data(c) for c in chunks) + sse_data("[DONE]")

    def error(self, err: FedaiError) -> bytes:
        return sse_data(error_body(err))


def answer_node(answer: Event) -> str:
    node = msgspec.json.decode(answer.content).get("node", "")
    return str(node)


class OpenAI:
    def __init__(
        self,
        *,
        keys: Keys,
        auth: Authenticator,
        planner: Planner,
        dispatcher: Dispatcher,
        completion: Completer,
        relay: StreamRelay,
        pool: asyncpg.Pool,
        tables: Mapping[str, ModelTable],
        policy: Policy,
        failures: Failures,
        metrics: RouterMetrics,
        max_request_bytes: int,
        paid: Paid,
        edge: EdgePayments | None,
        offload: PaidOffload | None = None,
    ) -> None:
        self.keys = keys  # records an API-key call as a router-signed request
        self.auth = auth
        self.planner = planner
        self.dispatcher = dispatcher
        self.completion = completion
        self.relay = relay
        self.pool = pool  # the chains kept for GET /v1/chains/{id}
        self.tables = tables  # the registry's scheduler tables (GET /v1/models)
        self.policy = policy  # freshness (GET /v1/models)
        self.failures = failures
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.paid = paid
        self.edge = edge  # a paying router (ROUTER_REQUIRE_PAYMENT): every call is paid first
        self.offload = offload  # with federation: paid calls for models only a peer router serves

    async def _call(self, request: Request, kind: str) -> tuple[Caller, InferenceRequest, dict[str, Any]]:
        body = await read_body(request, self.max_request_bytes)
        caller = await self.auth.authenticate(request, body)
        document = decode_json(body)  # depth-bounded: `[[[[…]]]]` is a 400, not a RecursionError
        payload = chat_request(document) if kind == "chat" else completion_request(document)
        return caller, payload, document

    async def complete(self, request: Request, kind: str) -> Response:
        """`POST /v1/chat/completions` (kind "chat") and `POST /v1/completions` (kind "text")."""
        route = "openai_chat" if kind == "chat" else "openai_completions"
        pubkey = self.keys.pubkey
        try:
            caller, payload, document = await self._call(request, kind)
            # the event that asked: the caller's NIP-98 authorization, or the router's own record of an API-key call
            asked = caller.auth_event or seal(
                self.keys, Kind.INFER_REQUEST, payload, to=pubkey, nonce=True, extra_tags=[["client", caller.client]]
            )
            origin = Origin(caller.client, asked.id)
            prepared = await self._prepare(caller, payload, asked)
            completion = Completion(kind, origin.id, payload.model)
            if payload.stream:
                options = document.get("stream_options") or {}
                usage = bool(isinstance(options, dict) and options.get("include_usage"))

                async def keep(answer: Event) -> None:
                    await save_chain(self.pool, origin.id, caller.client, asked, answer)

                self.metrics.requests.labels(route, "ok").inc()
                sink = OpenAISink(pubkey, completion, asked, usage, prepared.payment)
                dispatched, plan, held = prepared.request, prepared.plan, prepared.held
                assert plan is not None  # `_prepare` plans every stream (none is offloaded)
                return self.relay.respond(origin, dispatched, plan, sink, on_answer=keep, held=held)
            if prepared.job is not None:
                answered = await self._offloaded(origin, prepared, prepared.job)
            else:
                served = await self._serve(origin, prepared)
                answered = Answered(
                    await self._answer(origin, served, prepared.held),
                    decode_payload(served.response.content, InferenceResponse),
                    served.record,
                    served.node.pubkey,
                )
            answer = answered.answer
            await save_chain(self.pool, origin.id, caller.client, asked, answer)
        except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
            return _error(self.failures.refused(route, exc))
        fedai = fedai_field(pubkey, asked, answer, answered.record, answered.node, prepared.payment)
        body = completion.full(answered.response, answered.record, fedai)
        self.metrics.requests.labels(route, "ok").inc()
        return _json(body, headers={"X-Fedai-Chain-Id": answer.id})

    async def _prepare(self, caller: Caller, payload: InferenceRequest, asked: Event) -> Prepared:
        """Plan the call; on a paying router, pay it first (docs/payments.md#the-openai-edge) and hold its proof."""
        if self.edge is None:
            return Prepared(await self.planner.plan(caller.client, payload), payload, None)
        paid = await self.edge.paid(caller, payload, asked)
        payment = {"quote_id": paid.quote_id, "proof": msgspec.to_builtins(paid.payment)}
        with _naming(payment):
            held = await self.paid.hold(caller.client, paid)
            try:
                job = await self._offload_job(paid, held)
                if job is not None:
                    return Prepared(None, paid, held, payment, job)
                plan = await self.planner.plan(caller.client, held.for_planning(paid))
            except BaseException:
                await self.paid.release(held)
                raise
        return Prepared(plan, held.for_node(paid), held, payment)

    async def _offload_job(self, paid: InferenceRequest, held: Held) -> WonJob | None:
        """The award a paid call's quote was won by, if a peer router's (streams are never offloaded)."""
        if self.offload is None or paid.quote_id is None:
            return None
        job = await self.offload.for_payment(paid.quote_id, held.request_id)
        if job is not None and paid.stream:  # its quote was issued without an auction: not reached
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a stream is not served by a peer router: ask without stream")
        return job

    async def _offloaded(self, origin: Origin, prepared: Prepared, job: WonJob) -> Answered:
        """A paid call whose quote a peer router won: submitted to it with the provider's preimage and the call's
        refund link, our fee stated on its price, both statements kept and our fee's refund opened."""
        offload, held, settlement = self.offload, prepared.held, self.paid.settlement
        assert offload is not None and held is not None  # `_prepare` found the award for the held proof
        refund_to = held.forwarded.refund_to
        stating = None if settlement is None else settlement.stating(held.fee, refund_to)

        async def run() -> Event:
            return await offload.serve(origin, prepared.request, job, held.forwarded, stating)

        with _naming(prepared.payment):
            answer = await self.paid.while_held(held, run)
        if settlement is not None:
            await settlement.after_offload(answer, refund_to)
        return Answered.of(answer)

    async def _answer(self, origin: Origin, served: Served, held: Held | None) -> Event:
        """The signed answer; a paid call's states the router's settlement and opens its refund (the node's is in its
        metering), both going back to the caller's bound wallet through the call's refund link."""
        settlement = self.paid.settlement
        if held is None or settlement is None:
            return await self.completion.answer(origin, served.metered)
        return await settlement.settled_answer(self.completion, origin, served.metered, held.fee, held.forwarded)

    async def _serve(self, origin: Origin, prepared: Prepared) -> Served:
        plan = prepared.plan
        assert plan is not None  # only a paid offload has none, and it is not dispatched here

        async def dispatch() -> Served:
            return await self.dispatcher.serve(origin, prepared.request, plan.candidates, limits=plan.limits)

        async def serve() -> Served:
            return await self.planner.unless_served(plan.quote, dispatch)

        if prepared.held is None:
            return await serve()
        with _naming(prepared.payment):
            return await self.paid.while_held(prepared.held, serve)

    async def models(self, _: Request) -> Response:
        """Every model name the federation can serve now (fresh, not cooling down), with the cheapest pricing."""
        now = time.time()
        data = []
        for name, table in sorted(self.tables.items()):
            live = [
                (node, info) for _, node, info in table.rows() if self.policy.fresh(node.last_seen, node.heartbeat, now)
            ]
            if not live:
                continue
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "fedai",
                    "fedai": {
                        "nodes": len(live),
                        "canonical": sorted({info.id for _, info in live}),
                        "context_window": max(info.context_window for _, info in live),
                        "pricing": {
                            "unit": "msat_per_1k_tokens",
                            "input_msat": min(info.pricing.input_msat for _, info in live),
                            "output_msat": min(info.pricing.output_msat for _, info in live),
                        },
                    },
                }
            )
        return _json({"object": "list", "data": data})

    async def chain(self, request: Request) -> Response:
        """`GET /v1/chains/{id}`: the signed chain of one of the caller's completions."""
        try:
            caller = await self.auth.authenticate(request, b"")
            found = await load_chain(self.pool, request.path_params["chain_id"])
            if found is None or found["client"] != caller.client:
                raise FedaiError(ErrorCode.NOT_FOUND, "no chain with this id for this client")
        except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
            return _error(self.failures.refused("openai_chain", exc))
        return _json(
            {
                "router": self.keys.pubkey,
                "client": found["client"],
                "request": found["request"],
                "answer": found["answer"],
            }
        )
