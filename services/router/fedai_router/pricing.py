"""Quote prices: node pricing plus the router's fee. Pure.

Every part fits the `bigint` columns of `quotes`: a rate is at most MAX_RATE_MSAT per 1k tokens and a token
count at most INT4_MAX, so each part is below 2.2e18; the fee (base at most MAX_FEE_BASE_MSAT, at most 1e6 ppm)
at most doubles their sum, and the total stays below INT8_MAX (9.2e18).
"""

from __future__ import annotations

from fedai.protocol.messages import PriceBreakdown, Pricing

MAX_FEE_BASE_MSAT = 10**15  # ROUTER_FEE_BASE_MSAT's maximum (10,000 BTC): keeps every quote inside `bigint`


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def quote_price(
    pricing: Pricing, input_tokens: int, max_output_tokens: int, *, fee_base_msat: int, fee_ppm: int
) -> PriceBreakdown:
    """The most a request can cost: all `max_output_tokens` produced, each part rounded up to a whole msat
    (exact integer arithmetic: floats lose whole msat above 2^53)."""
    input_msat = _ceil_div(input_tokens * pricing.input_msat, 1000)
    output_msat = _ceil_div(max_output_tokens * pricing.output_msat, 1000)
    fee = fee_base_msat + _ceil_div((input_msat + output_msat) * fee_ppm, 1_000_000)
    return PriceBreakdown(
        input_msat=input_msat, output_msat=output_msat, router_fee_msat=fee, total_msat=input_msat + output_msat + fee
    )


class Fees:
    """The router fee now: ROUTER_FEE_BASE_MSAT / ROUTER_FEE_PPM, unless an operator set another through the admin
    API (applied by `fedai_router.admin_state`, on every replica)."""

    def __init__(self, base_msat: int, ppm: int) -> None:
        self.env_base_msat, self.env_ppm = base_msat, ppm
        self.base_msat, self.ppm = base_msat, ppm

    def apply(self, settings: dict[str, int]) -> None:
        self.base_msat = settings.get("fee_base_msat", self.env_base_msat)
        self.ppm = settings.get("fee_ppm", self.env_ppm)
