"""POST /quote: a signed, stored price for a request, with a breakdown and an expiry."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import QuoteRequest, QuoteResponse, estimate_tokens, prompt_material
from fedai_router.claims import Claims
from fedai_router.intake import Intake
from fedai_router.offloading import OFFLOADABLE
from fedai_router.paid_offload import PaidOffload
from fedai_router.pricing import Fees, quote_price
from fedai_router.scheduler import Demand, ModelTable, Policy, rank
from fedai_router.store.quotes import QuoteRow, insert_quote


@dataclass(frozen=True)
class Quotes:
    keys: Keys  # signs the quote
    intake: Intake
    claims: Claims
    pool: asyncpg.Pool  # where quotes are stored
    tables: Mapping[str, ModelTable]  # the registry's scheduler tables, by model name
    policy: Policy
    fees: Fees  # ROUTER_FEE_BASE_MSAT / ROUTER_FEE_PPM, or the operator's (admin API)
    ttl_s: int  # ROUTER_QUOTE_TTL_S
    offload: PaidOffload | None = None  # a paying router with federation: quotes for peers' work

    async def handle(self, body: bytes) -> Event:
        opened = self.intake.open_client(body, QuoteRequest, Kind.QUOTE_REQUEST)
        event = opened.event
        try:
            quote = self._priced(opened.payload)
        except FedaiError as err:
            # no node of ours fits: a paying router may price the exact job by an auction among its peers
            if err.code not in OFFLOADABLE or self.offload is None:
                raise
            await self.claims.claim(event)  # before the auction: a replayed quote request runs none
            quote = await self.offload.quote(event.id, opened.payload, err)
        else:
            await self.claims.claim(event)
        await self._store(event.pubkey, event.id, quote)
        return seal(
            self.keys, Kind.QUOTE_RESPONSE, quote, to=event.pubkey, reply_to=event.id, expiration=quote.expires_at
        )

    async def issue(self, client: str, request_id: str, request: QuoteRequest, offload: bool = False) -> QuoteResponse:
        """Price `request` for `client` and store the quote (`request_id`: the event that asked for it). With
        `offload`, a job no node of ours fits may be priced by an auction among peers, as `POST /quote` does."""
        try:
            quote = self._priced(request)
        except FedaiError as err:
            if not offload or err.code not in OFFLOADABLE or self.offload is None:
                raise
            quote = await self.offload.quote(request_id, request, err)
        await self._store(client, request_id, quote)
        return quote

    def _priced(self, request: QuoteRequest) -> QuoteResponse:
        input_tokens = (
            request.input_tokens if request.input_tokens is not None else estimate_tokens(len(prompt_material(request)))
        )
        now = time.time()
        demand = Demand(
            model=request.model, input_tokens=input_tokens, max_tokens=request.max_tokens, job_type=request.job_type
        )
        best = rank(self.tables.get(demand.model), demand, now=now, policy=self.policy, k=1)[0]
        price = quote_price(
            best.model.pricing,
            input_tokens,
            request.max_tokens,
            fee_base_msat=self.fees.base_msat,
            fee_ppm=self.fees.ppm,
        )
        expires_at = int(now) + self.ttl_s
        quote = QuoteResponse(
            quote_id=secrets.token_hex(16),
            model=request.model,
            node=best.node.pubkey,
            input_tokens=input_tokens,
            max_output_tokens=request.max_tokens,
            price=price,
            expires_at=expires_at,
        )
        return quote

    async def _store(self, client: str, request_id: str, quote: QuoteResponse) -> None:
        price = quote.price
        await insert_quote(
            self.pool,
            QuoteRow(
                id=quote.quote_id,
                request_id=request_id,
                client=client,
                model=quote.model,
                node=quote.payee,  # the work's payee: a node of ours, or the provider router
                input_tokens=quote.input_tokens,
                max_output_tokens=quote.max_output_tokens,
                input_msat=price.input_msat,
                output_msat=price.output_msat,
                router_fee_msat=price.router_fee_msat,
                total_msat=price.total_msat,
                expires_at=datetime.fromtimestamp(quote.expires_at, UTC),
                router=self.keys.pubkey,
            ),
        )
