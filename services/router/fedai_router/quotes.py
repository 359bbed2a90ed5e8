"""POST /quote: a signed, stored price for a request, with a breakdown and an expiry."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import QuoteRequest, QuoteResponse, estimate_tokens, prompt_material
from fedai_router.claims import Claims
from fedai_router.intake import Intake
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

    async def handle(self, body: bytes) -> Event:
        opened = self.intake.open_client(body, QuoteRequest, Kind.QUOTE_REQUEST)
        event, request = opened.event, opened.payload
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
        await self.claims.claim(event)
        await insert_quote(
            self.pool,
            QuoteRow(
                id=quote.quote_id,
                request_id=event.id,
                client=event.pubkey,
                model=quote.model,
                node=quote.node,
                input_tokens=input_tokens,
                max_output_tokens=request.max_tokens,
                input_msat=price.input_msat,
                output_msat=price.output_msat,
                router_fee_msat=price.router_fee_msat,
                total_msat=price.total_msat,
                expires_at=datetime.fromtimestamp(expires_at, UTC),
                router=self.keys.pubkey,
            ),
        )
        return seal(self.keys, Kind.QUOTE_RESPONSE, quote, to=event.pubkey, reply_to=event.id, expiration=expires_at)
