"""POST /infer: open the client's envelope, pick nodes, dispatch, store verified metering, answer with the chain."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import msgspec

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, InferResult, estimate_tokens, prompt_material
from fedai.store.db import UNAVAILABLE
from fedai_router.dispatch import Origin, Served
from fedai_router.federation.offload import can_offload, offload
from fedai_router.scheduler import Candidate, Demand, rank
from fedai_router.service import RouterService
from fedai_router.store.metering import MeteringEntry
from fedai_router.store.quotes import QuoteRow, get_quote, release_quote, use_quote
from fedai_router.verify import ReplyLimits, reply_limits

log = logging.getLogger("fedai.router")

T = TypeVar("T")

# Extra ranked nodes kept in reserve for when concurrent requests fill the best ones before we call them.
SPARE_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class SpentQuote:
    """A quote this request spent; `spender` (random, one per request) is what lets only it give the quote back."""

    id: str
    spender: str


@dataclass(frozen=True, slots=True)
class Plan:
    """How a request will be served: the ranked nodes, what every node's metering is held to, and the quote it
    spent (given back if no node serves it)."""

    candidates: list[Candidate]
    limits: ReplyLimits
    quote: SpentQuote | None = None


async def _agreed(svc: RouterService, client: str, request: InferenceRequest) -> tuple[int | None, QuoteRow | None]:
    """The most the client agreed to pay the node: its own cap (0 means 0), and a valid quote's node total if it
    names one, whichever is lower. Checks the quote without spending it."""
    cap = request.max_price_msat
    if request.quote_id is None:
        return cap, None
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
    if quote.used_at is not None:
        raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has already been used")
    node_total = quote.total_msat - quote.router_fee_msat
    return (node_total if cap is None else min(cap, node_total)), quote


async def _spend(svc: RouterService, quote: QuoteRow | None) -> SpentQuote | None:
    """Spend a quote before dispatch, so two requests cannot both ride on it (the database picks one)."""
    if quote is None:
        return None
    spent = SpentQuote(quote.id, secrets.token_hex(16))
    if not await use_quote(svc.pool, spent.id, spent.spender):
        raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has already been used")
    return spent


async def give_back(svc: RouterService, quote: SpentQuote | None) -> None:
    """No node served the request that spent `quote`: it may be used again (until it expires). With the database
    down it stays spent (logged): the request's own error is what the client must hear."""
    if quote is None:
        return
    try:
        await release_quote(svc.pool, quote.id, quote.spender)
    except UNAVAILABLE as exc:
        log.warning("quote not given back: database unavailable", extra={"error": type(exc).__name__})


async def unless_served(svc: RouterService, quote: SpentQuote | None, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` (everything up to a node's accepted answer); if it fails, the request was not served and its
    quote is given back. A request a node served keeps its quote spent."""
    try:
        return await work()
    except FedaiError:
        await give_back(svc, quote)
        raise


def limits_for(svc: RouterService, request: InferenceRequest, max_price_msat: int | None) -> ReplyLimits:
    per_byte, overhead = svc.settings.input_tokens_per_byte, svc.settings.input_tokens_overhead
    return reply_limits(request, max_price_msat, tokens_per_byte=per_byte, overhead=overhead)


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


async def plan(svc: RouterService, client: str, request: InferenceRequest) -> Plan:
    """The ranked nodes for a client's request, after its pins, price cap and quote are checked. The quote is
    spent only once a node was found for it; the caller gives it back (`unless_served`) if none serves."""
    demand = demand_for(request, request.max_price_msat)  # refuses bad pins before a quote is read
    cap, quote = await _agreed(svc, client, request)
    candidates = rank(
        svc.registry.tables.get(demand.model),
        replace(demand, max_price_msat=cap),
        now=time.time(),
        policy=svc.policy,
        k=svc.settings.max_attempts + SPARE_CANDIDATES,
        rng=svc.rng,
    )
    return Plan(candidates, limits_for(svc, request, cap), await _spend(svc, quote))


async def handle_infer(svc: RouterService, body: bytes) -> Event:
    opened = svc.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
    client_event, request = opened.event, opened.payload
    if request.stream:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "stream=true is served on /infer/stream")
    try:
        p = await plan(svc, client_event.pubkey, request)
    except FedaiError as err:
        # no node of ours fits, or all are busy: a peer router may serve it (docs/federation.md)
        if err.code not in (ErrorCode.UNKNOWN_MODEL, ErrorCode.NO_CAPACITY) or not can_offload(svc, request):
            raise
        return await _offload(svc, client_event, request, err)
    origin = Origin(client_event.pubkey, client_event.id)

    async def serve() -> Served:
        return await svc.dispatcher.serve(origin, request, p.candidates, limits=p.limits)

    served = await unless_served(svc, p.quote, lambda: while_claiming(svc, client_event, serve))
    return await answer_served(svc, origin, served)


async def _offload(svc: RouterService, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
    """Offload under the same price cap and quote as a local dispatch (the job sent strips the cap itself)."""
    cap, quote = await _agreed(svc, client_event.pubkey, request)
    spent = await _spend(svc, quote)
    capped = msgspec.structs.replace(request, max_price_msat=cap)

    async def run() -> Event:
        return await offload(svc, client_event, capped, local)

    return await unless_served(svc, spent, lambda: while_claiming(svc, client_event, run))


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
