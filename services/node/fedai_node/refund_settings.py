"""The node's refund settings (docs/payments.md#refunds, runbooks/payments.md)."""

from __future__ import annotations

from dataclasses import dataclass

from fedai.service.config import Env


@dataclass(frozen=True)
class RefundSettings:
    dust_msat: int = 1_000  # NODE_REFUND_DUST_MSAT: an unused share below this is kept (and stated)
    max_fee_msat: int = 10_000  # NODE_REFUND_MAX_FEE_MSAT: routing fee allowed on one refund
    retry_s: int = 60  # NODE_REFUND_RETRY_S: the retry loop's period, and a failed refund's backoff
    max_attempts: int = 8  # NODE_REFUND_MAX_ATTEMPTS: then `failed`, for the operator
    allow_private: bool = False  # NODE_REFUND_ALLOW_PRIVATE: http and private addresses (loopback tests only)

    @classmethod
    def from_env(cls, env: Env) -> RefundSettings:
        return cls(
            dust_msat=env.integer("NODE_REFUND_DUST_MSAT", 1_000, minimum=0, maximum=10**9),
            max_fee_msat=env.integer("NODE_REFUND_MAX_FEE_MSAT", 10_000, minimum=0, maximum=10**9),
            retry_s=env.integer("NODE_REFUND_RETRY_S", 60, minimum=1, maximum=86_400),
            max_attempts=env.integer("NODE_REFUND_MAX_ATTEMPTS", 8, minimum=1, maximum=1_000),
            allow_private=env.flag("NODE_REFUND_ALLOW_PRIVATE", False),
        )
