"""How a payee's refund is shown (the `refund` of GET /payments/{id} and GET /admin/api/payments, `fedai
payment`'s line): the refund's own state when the router's database holds it, `stated` when it holds only the
payee's signed promise, nothing before the answer; never a destination (docs/payments.md#refunds)."""

from __future__ import annotations

from typing import Any

from fedai.cli.payment_view import refund_line
from fedai_router.store.payment_listing import refund_view


def payee(**fields: Any) -> Any:
    row = {"used_msat": None, "refund_msat": None, "kept_msat": None, "refund_state": None, "refund_amount": None}
    return row | fields


def test_a_payee_not_answered_yet_shows_no_refund() -> None:
    assert refund_view(payee()) is None
    assert refund_line({"role": "node", "refund": None}) is None


def test_a_node_refund_held_elsewhere_is_shown_as_stated() -> None:
    shown = refund_view(payee(used_msat=800, refund_msat=3_000, kept_msat=0))
    assert shown == {"state": "stated", "refund_msat": 3_000, "refunded_msat": 0, "used_msat": 800, "kept_msat": 0}
    assert refund_line({"refund": shown}) == "      refund stated: 3000 msat, used 800, kept 0"


def test_nothing_owed_is_none_and_a_failed_refund_refunded_nothing() -> None:
    kept = refund_view(payee(used_msat=500, refund_msat=0, kept_msat=20))
    assert kept is not None and kept["state"] == "none" and kept["kept_msat"] == 20
    failed = refund_view(payee(used_msat=100, refund_msat=400, kept_msat=0, refund_state="failed", refund_amount=400))
    assert failed is not None and failed["state"] == "failed" and failed["refunded_msat"] == 0
