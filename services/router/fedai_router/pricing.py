"""Quote prices: node pricing plus the router's fee. Pure."""

from __future__ import annotations

import math

from fedai.protocol.messages import PriceBreakdown, Pricing


def quote_price(
    pricing: Pricing, input_tokens: int, max_output_tokens: int, *, fee_base_msat: int, fee_ppm: int
) -> PriceBreakdown:
    """The most a request can cost: all `max_output_tokens` produced, each part rounded up to a whole msat."""
    input_msat = math.ceil(input_tokens * pricing.input_msat / 1000)
    output_msat = math.ceil(max_output_tokens * pricing.output_msat / 1000)
    fee = fee_base_msat + math.ceil((input_msat + output_msat) * fee_ppm / 1_000_000)
    return PriceBreakdown(
        input_msat=input_msat, output_msat=output_msat, router_fee_msat=fee, total_msat=input_msat + output_msat + fee
    )
