"""The pure parts of the admin earnings and payments views (runbooks/admin.md#dashboard): the daily series the
earnings chart draws, and a payment request as a dashboard row (ids and client shortened, refunds stated)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fedai.payments.earnings import daily, totals
from fedai_router.dashboard import payment_row


def row(day: str, role: str, msat: int, refunded: int) -> dict[str, Any]:
    return {
        "day": day,
        "key": "m",
        "role": role,
        "requests": 1,
        "msat": msat,
        "refunded_msat": refunded,
        "net_msat": msat - refunded,
    }


def test_the_series_has_every_day_oldest_first_with_only_the_roles_net() -> None:
    rows = [
        row("2026-12-04", "router_fee", 900, 100),
        row("2026-12-04", "node", 5_000, 0),
        row("2026-12-06", "router_fee", 300, 0),
        row("2026-12-06", "router_fee", 50, 50),  # another model, all refunded
        row("2026-11-01", "router_fee", 700, 0),  # before the window: not drawn
    ]
    series = daily(rows, "router_fee", 4, date(2026, 12, 6))
    assert series == [("2026-12-03", 0), ("2026-12-04", 800), ("2026-12-05", 0), ("2026-12-06", 300)]
    assert daily([], "router_fee", 2, date(2026, 1, 1)) == [("2025-12-31", 0), ("2026-01-01", 0)]
    assert totals(rows) == {"router_fee": 1_800, "node": 5_000}


def test_a_payment_row_shortens_ids_and_states_each_refund_but_none_that_is_not_owed() -> None:
    refund = {"state": "paid", "refund_msat": 120, "refunded_msat": 120, "used_msat": 80, "kept_msat": 0}
    nothing = refund | {"state": "none", "refund_msat": 0, "refunded_msat": 0}
    payment = {
        "id": "a" * 64,
        "client": "b" * 64,
        "model": None,
        "state": "consumed",
        "created_at": "2026-12-06T06:19:03.123+00:00",
        "total_msat": 1_200,
        "payees": [
            {"role": "router_fee", "state": "consumed", "refund": refund},
            {"role": "node", "state": "consumed", "refund": nothing},
        ],
    }
    assert payment_row(payment) == (
        "2026-12-06 06:19:03",
        "a" * 12 + "…",
        "b" * 12 + "…",
        "?",
        "consumed",
        "1200",
        "fee consumed, node consumed",
        "fee paid 120",
    )
    unanswered = payment | {"payees": [{"role": "provider", "state": "issued", "refund": None}]}
    assert payment_row(unanswered)[6:] == ("provider issued", "-")
