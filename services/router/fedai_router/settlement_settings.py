"""The router's settlement settings: reconciliation and refunds of its fee (docs/payments.md#refunds,
runbooks/payments.md)."""

from __future__ import annotations

from dataclasses import dataclass

from fedai.service.config import Env

DAY_S = 86_400


@dataclass(frozen=True)
class SettlementSettings:
    interval_s: int = 30  # ROUTER_RECONCILE_INTERVAL_S: one reconciliation pass this often, on every replica
    stale_s: int = 300  # ROUTER_PAYMENT_STALE_S: a claim or a refund held this long belongs to a dead replica
    refund_retry_s: int = 60  # ROUTER_REFUND_RETRY_S: a failed refund is tried again after this
    refund_dust_msat: int = 1_000  # ROUTER_REFUND_DUST_MSAT: an unused fee below this is kept (and stated)
    refund_max_fee_msat: int = 10_000  # ROUTER_REFUND_MAX_FEE_MSAT: routing fee allowed on one refund
    refund_max_attempts: int = 8  # ROUTER_REFUND_MAX_ATTEMPTS: then the refund is `failed`, for an operator
    failing_attempts: int = 3  # an open refund tried this often is flagged (`refund_failing`)

    @classmethod
    def from_env(cls, env: Env) -> SettlementSettings:
        return cls(
            interval_s=env.integer("ROUTER_RECONCILE_INTERVAL_S", 30, minimum=1, maximum=DAY_S),
            stale_s=env.integer("ROUTER_PAYMENT_STALE_S", 300, minimum=30, maximum=DAY_S),
            refund_retry_s=env.integer("ROUTER_REFUND_RETRY_S", 60, minimum=1, maximum=DAY_S),
            refund_dust_msat=env.integer("ROUTER_REFUND_DUST_MSAT", 1_000, minimum=0, maximum=10**9),
            refund_max_fee_msat=env.integer("ROUTER_REFUND_MAX_FEE_MSAT", 10_000, minimum=0, maximum=10**9),
            refund_max_attempts=env.integer("ROUTER_REFUND_MAX_ATTEMPTS", 8, minimum=1, maximum=1_000),
        )
