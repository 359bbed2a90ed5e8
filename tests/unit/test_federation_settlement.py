"""What a router announces it settles with (docs/federation.md#settlement)."""

from __future__ import annotations

import pytest

from fedai_router.federation.settlement import award_invoice_key, settlement_methods


@pytest.mark.parametrize(
    ("wallet", "required", "methods"),
    [
        (True, True, ["lightning"]),
        (True, False, ["lightning", "none"]),
        (False, False, ["none"]),
        (False, True, []),  # requires payment but cannot take it: takes no job at all
    ],
)
def test_settlement_methods(wallet: bool, required: bool, methods: list[str]) -> None:
    assert settlement_methods(wallet=wallet, required=required) == methods


def test_an_award_is_invoiced_under_one_key_per_award_and_price() -> None:
    one = award_invoice_key("p" * 64, "a" * 64, 100)
    assert one == award_invoice_key("p" * 64, "a" * 64, 100)
    assert len({one, award_invoice_key("p" * 64, "b" * 64, 100), award_invoice_key("p" * 64, "a" * 64, 101)}) == 3
