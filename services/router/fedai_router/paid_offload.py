"""A client pays for an offloaded request (docs/payments.md#federation-settlement), through the same flow as for
local work: quote, pay, infer.

- **Quote.** When no node of ours can take a paying client's quote, the quote is priced by an auction among peer
  routers for the exact job (its prompt, sizes, sampling options and privacy: the RFB carries the job's salted
  hash, which the provider checks against the job it is sent). The quote names the winner as `provider`, its bid
  as the work's share, and this router's fee on top. The award is kept with the quote (`offload_quotes`).
- **Pay.** The winner invoices its bid from its own wallet (`Offloader.provider_invoice`), listed in the payment
  request in place of a node (role `provider`) beside this router's fee; the award is bound to that payment
  request.
- **Infer.** With the client's proof claimed as for local work, the job is submitted to the winner with the
  provider's preimage (`Offloader.run_paid`); the receipt must name the payment hash. A failure releases the claim
  and gives the quote back: the same proof retries the same award until the payment request expires.

This router never pays the provider and never holds its money; its wallet receives only its fee. The job carries
the client's `refund_to` as the client signed it; the provider states in its signed receipt what it used of its
invoice (its receipt's price) and refunds the rest there from its own wallet; this router states its fee on that
price in its answer and refunds the rest of its fee (docs/payments.md#refunds).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import asyncpg

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import job_hash
from fedai.protocol.messages import (
    ForwardedPayment,
    InferenceRequest,
    Payee,
    PriceBreakdown,
    QuoteRequest,
    QuoteResponse,
    Settlement,
    estimate_tokens,
    prompt_material,
)
from fedai.protocol.payment import invalid
from fedai_router.claims import Claims
from fedai_router.completion import Origin
from fedai_router.offloading import Offloader, PaidJob, WonJob, provider_entry
from fedai_router.planning import Planner
from fedai_router.pricing import Fees
from fedai_router.store.offload_quotes import bind_payment_request, insert_won, won_for_quote
from fedai_router.store.quotes import get_quote

NOT_THE_QUOTED_JOB = (
    "the request is not the job its quote was priced for (a quote a peer router serves binds the exact job: "
    "prompt or messages, max_tokens, sampling options and privacy, as the quote request named them)"
)


def quoted_job(request: QuoteRequest) -> InferenceRequest | None:
    """The job a quote request describes, as the inference request will carry it; None when it names only a
    token count (no job to auction). Pure."""
    if request.prompt is None and request.messages is None:
        return None
    return InferenceRequest(
        model=request.model,
        prompt=request.prompt,
        messages=request.messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        job_type=request.job_type,
        privacy=request.privacy,
    )


def offload_price(work_msat: int, fees: Fees) -> PriceBreakdown:
    """The provider's bid as the work's share (one figure: all in `output_msat`), this router's fee on top, computed
    as for a node's share. Pure."""
    fee = fees.base_msat + -(-work_msat * fees.ppm // 1_000_000)
    return PriceBreakdown(input_msat=0, output_msat=work_msat, router_fee_msat=fee, total_msat=work_msat + fee)


def is_quoted_job(request: InferenceRequest, job: WonJob) -> bool:
    """The client's request is exactly the job the award was won for (its salted hash is the RFB's). Pure."""
    return job_hash(request, job.salt) == job.job_hash


class PaidOffload:
    """The paid offload's three steps, each called by the step of the client flow it belongs to."""

    def __init__(
        self,
        *,
        offloader: Offloader,
        pool: asyncpg.Pool,
        fees: Fees,
        quote_ttl_s: int,
        planner: Planner,
        claims: Claims,
    ) -> None:
        self.offloader = offloader
        self.pool = pool  # quotes, offload_quotes
        self.fees = fees
        self.quote_ttl_s = quote_ttl_s  # ROUTER_QUOTE_TTL_S: how long the award is held for the client to pay
        self.planner = planner
        self.claims = claims

    # -- POST /quote ----------------------------------------------------------------------------------------------

    async def quote(self, request_id: str, request: QuoteRequest, local: FedaiError) -> QuoteResponse:
        """A quote priced by a peer's winning bid for exactly this job, the award kept with it; `local` (why no node
        of ours can take it) when the job may not leave, names no prompt, or no peer won it."""
        job = quoted_job(request)
        if job is None or not self.offloader.can_offload(job):
            raise local
        won = await self.offloader.win_job(job, hold_s=self.quote_ttl_s, key=request_id)
        if won is None:
            raise local
        quote = QuoteResponse(
            quote_id=secrets.token_hex(16),
            model=request.model,
            provider=won.provider,
            input_tokens=estimate_tokens(len(prompt_material(job))),
            max_output_tokens=request.max_tokens,
            price=offload_price(won.price_msat, self.fees),
            expires_at=min(int(time.time()) + self.quote_ttl_s, won.deadline_s),
        )
        await insert_won(self.pool, quote.quote_id, won)
        return quote

    # -- POST /pay ------------------------------------------------------------------------------------------------

    async def won(self, quote_id: str) -> WonJob | None:
        """The award won for `quote_id`; None for a local node's quote."""
        found = await won_for_quote(self.pool, quote_id)
        return None if found is None else found[0]

    async def invoice(self, job: WonJob, *, quote: str, client: str, expires_at: int) -> Payee:
        """The winner's own invoice for its bid, checked: the payment request's `provider` entry."""
        return await self.offloader.provider_invoice(job, quote=quote, client=client, expires_at=expires_at)

    async def bind(self, quote_id: str, payment_request: str) -> None:
        """Remember which payment request pays the quote's award (no-op for a local node's quote)."""
        await bind_payment_request(self.pool, quote_id, payment_request)

    # -- POST /infer with the proof -------------------------------------------------------------------------------

    async def for_payment(self, quote_id: str, payment_request: str) -> WonJob | None:
        """The award a claimed proof pays, or None when the quote is a local node's."""
        found = await won_for_quote(self.pool, quote_id)
        if found is None:
            return None
        job, bound = found
        if bound != payment_request:
            raise invalid("the payment request is not the one issued for this quote's provider")
        return job

    async def serve(
        self,
        origin: Origin,
        request: InferenceRequest,
        job: WonJob,
        forwarded: ForwardedPayment,
        fee_statement: Callable[[int], Settlement | None] | None = None,
        claim: Event | None = None,
    ) -> Event:
        """Submit the paid job to its provider (the proof's claim is held by the caller) and answer `origin`, with
        our fee stated by `fee_statement` on the provider's price; the quote is spent while it runs and given back
        if the provider fails. `claim`: the client's event, held against replays while the job runs (the OpenAI
        edge has none to hold: its authorization was claimed when it was checked)."""
        if not is_quoted_job(request, job):
            raise FedaiError(ErrorCode.QUOTE_INVALID, NOT_THE_QUOTED_JOB)
        provider_entry(forwarded.request, job.provider)  # refused before the quote is spent
        quote = await get_quote(self.pool, request.quote_id or "")
        spent = await self.planner.spend(quote)

        async def run() -> Event:
            paid = PaidJob(forwarded.request, forwarded.preimage, forwarded.refund_to, fee_statement)
            return await self.offloader.run_paid(origin, request, job, paid)

        if claim is None:
            return await self.planner.unless_served(spent, run)
        event = claim
        return await self.planner.unless_served(spent, lambda: self.claims.while_claiming(event, run))
