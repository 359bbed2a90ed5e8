"""Payment metrics shared by the router and the node (docs/payments.md#refunds, runbooks/payments.md), in the
service's own registry. Labels are fixed small sets (states, roles, outcomes, wallet methods and reasons):
never a key, a hash, an amount or a destination."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedai.observability.metrics import LATENCY_BUCKETS


class PaymentMetrics:
    """`service` is `router` or `node`: the metric names are `fedai_<service>_…`."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        p = f"fedai_{service}"
        self.requests = Gauge(
            f"{p}_payment_requests",
            "Payment requests by state (issued, consumed, expired), counted by the reconciliation job",
            ["state"],
            registry=registry,
        )
        self.payees = Gauge(
            f"{p}_payment_payees",
            "Payees of payment requests by role and state (issued, paid, consumed, released, expired)",
            ["role", "state"],
            registry=registry,
        )
        self.proofs = Counter(
            f"{p}_payment_proofs",
            "Payees' proofs by role and outcome (claimed, consumed, released, refused)",
            ["role", "outcome"],
            registry=registry,
        )
        self.earned = Counter(
            f"{p}_earned_msat",
            "Millisatoshis earned (served and kept, after refunds) by role",
            ["role"],
            registry=registry,
        )
        self.refunds = Counter(
            f"{p}_refunds",
            "Refund attempts by role and outcome (paid, retry, failed, busy)",
            ["role", "outcome"],
            registry=registry,
        )
        self.refund_msat = Counter(
            f"{p}_refund_msat",
            "Unused millisatoshis by role and fate (refunded: opened; dust: kept and stated)",
            ["role", "fate"],
            registry=registry,
        )
        self.wallet_calls = Counter(
            f"{p}_wallet_calls",
            "Calls to this service's wallet by method and outcome (ok or the error's reason)",
            ["method", "outcome"],
            registry=registry,
        )
        self.wallet_seconds = Histogram(
            f"{p}_wallet_seconds",
            "Wallet call latency by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconciled = Counter(
            f"{p}_payments_reconciled",
            "Rows the reconciliation job changed, by what it did",
            ["action"],
            registry=registry,
        )
        self.anomalies = Gauge(
            f"{p}_payment_anomalies",
            "Anomalies seen by the last reconciliation pass, by kind",
            ["kind"],
            registry=registry,
        )

    def observe_wallet(self, method: str, outcome: str, seconds: float) -> None:
        self.wallet_calls.labels(method, outcome).inc()
        self.wallet_seconds.labels(method).observe(seconds)

    def observe_refund(self, role: str, outcome: str) -> None:
        self.refunds.labels(role, outcome).inc()
