"""How long a router and a node keep their payment rows (docs/payments.md#retention).

A payment hash may be forgotten only once no invoice or payment request naming it can still be presented: every
row is kept until its payment request expired plus the retention, and never while it is held (a claim in flight)
or its refund is still open. The retention is at least `MIN_PAYMENT_RETENTION_S`, so a clock that lags the
database's by less than that can never take a forgotten hash for an unexpired one; 0 keeps the rows for good.
"""

from __future__ import annotations

from fedai.service.config import ConfigError, Env

DAY_S = 86_400
DEFAULT_PAYMENT_RETENTION_S = 90 * DAY_S
MIN_PAYMENT_RETENTION_S = 3_600
MAX_PAYMENT_RETENTION_S = 10 * 366 * DAY_S


def payment_retention_s(env: Env, name: str) -> int:
    """`name` (ROUTER_PAYMENT_RETENTION_S or NODE_PAYMENT_RETENTION_S): 0, or between one hour and ten years."""
    seconds = env.integer(name, DEFAULT_PAYMENT_RETENTION_S, minimum=0, maximum=MAX_PAYMENT_RETENTION_S)
    if 0 < seconds < MIN_PAYMENT_RETENTION_S:
        raise ConfigError(
            f"{name} must be 0 (keep payment rows for good) or at least {MIN_PAYMENT_RETENTION_S} s, got {seconds}"
        )
    return seconds
