"""How a request will be served, before any node is called: its pins, its price cap and its quote checked, the
quote spent, and the nodes ranked. Both the client's routes (/infer, /infer/stream, the OpenAI API) and the
federation provider (a peer's job) plan here; a request no node served gives its quote back (`unless_served`)."""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import asyncpg

from fedai.observability.tracing import annotate, span
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import InferenceRequest, estimate_tokens, prompt_material
from fedai.store.db import UNAVAILABLE
from fedai_router.scheduler import Candidate, Demand, ModelTable, Policy, rank
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


def quote_refusal(
    quote: QuoteRow | None, client: str, router: str, request: InferenceRequest, now: float
) -> str | None:
    """Why `quote` cannot pay for `client`'s `request` at this router (a `quote_invalid` message), or None. Pure."""
    if quote is None or quote.client != client:
        return "unknown quote for this client (quotes are per router and client)"
    if quote.router != router:
        return "quote was issued by another router"
    if quote.expires_at.timestamp() <= now:
        return "quote has expired"
    if quote.model != request.model or request.max_tokens > quote.max_output_tokens:
        return "request does not match the quote (model or max_tokens)"
    if estimate_tokens(len(prompt_material(request))) > quote.input_tokens:
        return "prompt is longer than the quote priced"
    if quote.used_at is not None:
        return "quote has already been used"
    return None


class Planner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        tables: Mapping[str, ModelTable],
        *,
        router: str,
        policy: Policy,
        max_attempts: int,
        tokens_per_byte: int,
        tokens_overhead: int,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool  # the quotes
        self.tables = tables  # the registry's scheduler tables, by model name
        self.router = router  # this router's pubkey: quotes are its own
        self.policy = policy
        self.max_attempts = max_attempts
        self.tokens_per_byte = tokens_per_byte
        self.tokens_overhead = tokens_overhead
        self.rng = rng or random.Random()

    async def plan(self, client: str, request: InferenceRequest) -> Plan:
        """The ranked nodes for a client's request, after its pins, price cap and quote are checked. The quote is
        spent only once a node was found for it; the caller gives it back (`unless_served`) if none serves."""
        with span("router.schedule", {"fedai.model": request.model}):
            demand = demand_for(request, request.max_price_msat)  # refuses bad pins before a quote is read
            cap, quote = await self.agreed(client, request)
            candidates = rank(
                self.tables.get(demand.model),
                replace(demand, max_price_msat=cap),
                now=time.time(),
                policy=self.policy,
                k=self.max_attempts + SPARE_CANDIDATES,
                rng=self.rng,
            )
            annotate({"fedai.candidates": len(candidates)})
            return Plan(candidates, self.limits_for(request, cap), await self.spend(quote))

    async def agreed(self, client: str, request: InferenceRequest) -> tuple[int | None, QuoteRow | None]:
        """The most the client agreed to pay the node: its own cap (0 means 0), and a valid quote's node total if it
        names one, whichever is lower. Checks the quote without spending it."""
        cap = request.max_price_msat
        if request.quote_id is None:
            return cap, None
        quote = await get_quote(self.pool, request.quote_id)
        refusal = quote_refusal(quote, client, self.router, request, time.time())
        if refusal is not None or quote is None:
            raise FedaiError(ErrorCode.QUOTE_INVALID, refusal or "unknown quote")
        node_total = quote.total_msat - quote.router_fee_msat
        return (node_total if cap is None else min(cap, node_total)), quote

    def limits_for(self, request: InferenceRequest, max_price_msat: int | None) -> ReplyLimits:
        """What a node's metering for `request` is held to, under the price cap the client agreed to."""
        return reply_limits(
            request, max_price_msat, tokens_per_byte=self.tokens_per_byte, overhead=self.tokens_overhead
        )

    async def spend(self, quote: QuoteRow | None) -> SpentQuote | None:
        """Spend a quote before dispatch, so two requests cannot both ride on it (the database picks one)."""
        if quote is None:
            return None
        spent = SpentQuote(quote.id, secrets.token_hex(16))
        if not await use_quote(self.pool, spent.id, spent.spender):
            raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has already been used")
        return spent

    async def give_back(self, quote: SpentQuote | None) -> None:
        """No node served the request that spent `quote`: it may be used again (until it expires). With the
        database down it stays spent (logged): the request's own error is what the client must hear."""
        if quote is None:
            return
        try:
            await release_quote(self.pool, quote.id, quote.spender)
        except UNAVAILABLE as exc:
            log.warning("quote not given back: database unavailable", extra={"error": type(exc).__name__})

    async def unless_served(self, quote: SpentQuote | None, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` (everything up to a node's accepted answer); if it fails, the request was not served and its
        quote is given back. A request a node served keeps its quote spent."""
        try:
            return await work()
        except FedaiError:
            await self.give_back(quote)
            raise
