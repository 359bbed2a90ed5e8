"""POST /infer: open the client's envelope, pick nodes, dispatch, store verified metering, answer with the chain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, InferResult, estimate_tokens, prompt_material
from fedai.store.metering import MeteringEntry
from fedai.store.quotes import get_quote, use_quote
from fedai_router.dispatch import Origin, Served
from fedai_router.federation.offload import can_offload, offload
from fedai_router.scheduler import Candidate, Demand, rank
from fedai_router.service import RouterService

T = TypeVar("T")

# Extra ranked nodes kept in reserve for when concurrent requests fill the best ones before we call them.
SPARE_CANDIDATES = 8


async def _price_cap(svc: RouterService, client: str, request: InferenceRequest) -> int | None:
    """The most the client agreed to pay: its own cap, and a valid quote's total if it names one. A quote is
    single-use: it is spent here, before dispatch, so two requests cannot both ride on it."""
    cap = request.max_price_msat
    if request.quote_id is None:
        return cap
    quote = await get_quote(svc.pool, request.quote_id)
    if quote is None or quote.client != client:
        raise FedaiError(ErrorCode.QUOTE_INVALID, "unknown quote for this client (quotes are per router and client)")
    if quote.router != svc.pubkey:
        raise FedaiError(ErrorCode.QUOTE_INVALID, "quote was issued by another router")
    if quote.expires_at.timestamp() <= time.time():
        raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has expired")
    if quote.model != request.model or request.max_tokens > quote.max_output_tokens:
        raise FedaiError(ErrorCode.QUOTE_INVALID, "request does not match the quote (model or max_tokens)")
    if estimate_tokens(len(prompt_material(request))) > quote.input_tokens:
        raise FedaiError(ErrorCode.QUOTE_INVALID, "prompt is longer than the quote priced")
    if quote.used_at is not None or not await use_quote(svc.pool, quote.id):
        raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has already been used")
    node_total = quote.total_msat - quote.router_fee_msat
    return node_total if cap is None else min(cap, node_total)


def demand_for(request: InferenceRequest, max_price_msat: int | None) -> Demand:
    """What the scheduler must find for `request`; refuses a node that is both pinned and excluded."""
    pin = frozenset(request.nodes or ())
    exclude = frozenset(request.exclude_nodes or ())
    if pin & exclude:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "the same node is both pinned (nodes) and excluded (exclude_nodes)")
    return Demand(
        model=request.model,
        input_tokens=estimate_tokens(len(prompt_material(request))),
        max_tokens=request.max_tokens,
        job_type=request.job_type,
        max_price_msat=max_price_msat,
        pin=pin,
        exclude=exclude,
    )


async def while_claiming(
    svc: RouterService,
    event: Event,
    work: Callable[[], Awaitable[T]],
    release: Callable[[T], Awaitable[None]] | None = None,
    *,
    local: bool = True,
) -> T:
    """Claim `event`'s id in Postgres while `work` (the node call) runs; give its result only if the claim won.

    The database round trip (a synchronous commit) overlaps the node call instead of adding to it. A replay
    to this replica is refused before any work (`claim_locally`); one sent to another replica at the same
    moment can cost that replica's node one wasted call, but never a second answer or metering record. If the
    claim loses, `release` undoes what `work` holds (e.g. an open stream). `local=False` when the caller has
    already made the local claim.
    """
    if local:
        await svc.claim_locally(event)
    claim = asyncio.ensure_future(svc.claim(event))
    try:
        result = await work()
    except BaseException:
        await claim  # a replay outranks the work's failure; otherwise the work's error stands
        raise
    try:
        await claim
    except BaseException:
        if release is not None:
            await release(result)
        raise
    return result


async def plan(svc: RouterService, client: str, request: InferenceRequest) -> list[Candidate]:
    """The ranked nodes for a client's request, after its pins, price cap and quote are checked."""
    demand = demand_for(request, request.max_price_msat)  # refuses bad pins before a quote is spent
    if request.quote_id is not None:
        demand = replace(demand, max_price_msat=await _price_cap(svc, client, request))
    return rank(
        svc.registry.tables.get(demand.model),
        demand,
        now=time.time(),
        policy=svc.policy,
        k=svc.settings.max_attempts + SPARE_CANDIDATES,
        rng=svc.rng,
    )


async def handle_infer(svc: RouterService, body: bytes) -> Event:
    opened = svc.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
    client_event, request = opened.event, opened.payload
    if request.stream:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "stream=true is served on /infer/stream")
    try:
        candidates = await plan(svc, client_event.pubkey, request)
    except FedaiError as err:
        # no node of ours fits, or all are busy: a peer router may serve it (docs/federation.md)
        if err.code not in (ErrorCode.UNKNOWN_MODEL, ErrorCode.NO_CAPACITY) or not can_offload(svc, request):
            raise
        local = err
        return await while_claiming(svc, client_event, lambda: offload(svc, client_event, request, local))
    origin = Origin(client_event.pubkey, client_event.id)
    served = await while_claiming(svc, client_event, lambda: svc.dispatcher.serve(origin, request, candidates))
    return await answer_served(svc, origin, served)


async def answer_served(svc: RouterService, origin: Origin, served: Served) -> Event:
    """Store the verified metering, then sign the answer carrying the whole chain."""
    record = served.record
    await svc.metering.record(
        MeteringEntry(record=record, event=served.metering, origin_id=origin.id, client=origin.client,
                      node=served.node.pubkey, attempt=served.attempts)
    )  # fmt: skip
    svc.metrics.metering_msat.inc(record.price_msat)
    svc.metrics.tokens.labels("in").inc(record.input_tokens)
    svc.metrics.tokens.labels("out").inc(record.output_tokens)
    result = InferResult(
        forwarded=served.forwarded, response=served.response, metering=served.metering, node=served.node.pubkey
    )
    return seal(svc.keys, Kind.INFER_RESPONSE, result, to=origin.client, reply_to=origin.id)
