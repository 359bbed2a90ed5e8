"""Usage-based settlement, pure: the refund is the quoted share less the metered one, dust is kept and stated, the
router's fee follows its formula on the metered work, a destination is checked without being quoted, and the
SDK refuses settlements that name another invoice, do not add up, or refund to a destination never named."""

from __future__ import annotations

import msgspec
import pytest

from fedai.payments.refund import fee_used, parse_destination, refund_key, settle_share
from fedai.protocol.messages import MeteringRecord, PaymentRequest, Settlement, decode_payload
from fedai.sdk.errors import ChainError, Link
from fedai.sdk.settlement import check_settlements
from tests.support.payments import Paid

HASH = "ab" * 32


@pytest.mark.parametrize(
    ("quoted", "used", "dust", "refunding", "expected"),
    [
        (10_000, 3_000, 1_000, True, (3_000, 7_000, 0)),  # refund = quoted share − metered share
        (10_000, 9_500, 1_000, True, (9_500, 0, 500)),  # dust below the threshold: kept, and stated
        (10_000, 9_000, 1_000, True, (9_000, 1_000, 0)),  # at the threshold: refunded
        (10_000, 3_000, 1_000, False, (3_000, 0, 7_000)),  # no destination named: kept
        (10_000, 12_000, 1_000, True, (10_000, 0, 0)),  # used over the ceiling: never paid more, nothing back
        (10_000, 10_000, 0, True, (10_000, 0, 0)),
    ],
)
def test_a_share_splits_into_used_refunded_and_kept(
    quoted: int, used: int, dust: int, refunding: bool, expected: tuple[int, int, int]
) -> None:
    s = settle_share("node", HASH, quoted, used, dust, refunding=refunding)
    assert (s.used_msat, s.refund_msat, s.kept_msat) == expected
    assert s.used_msat + s.refund_msat + s.kept_msat == s.quoted_msat == quoted


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        settle_share("node", HASH, 10, -1, 0, refunding=True)


def test_the_router_fee_used_is_its_formula_on_the_metered_work_capped_at_the_quote() -> None:
    assert fee_used(2_000, 3_001, base_msat=100, ppm=200_000) == 100 + 601  # rounded up like the quote
    assert fee_used(500, 10_000_000, base_msat=100, ppm=200_000) == 500


def test_the_refund_key_is_stable_per_invoice_and_role() -> None:
    assert refund_key(HASH, "node") == refund_key(HASH, "node") != refund_key(HASH, "router_fee")
    assert refund_key(HASH, "node") != refund_key("cd" * 32, "node")


def test_destinations_are_addresses_lnurl_urls_or_nwc_and_errors_never_quote_them() -> None:
    assert parse_destination("Alice@Example.com").target == "https://example.com/.well-known/lnurlp/alice"
    assert parse_destination("lnurlp://pay.example.com/x?y=1").target == "https://pay.example.com/x?y=1"
    assert parse_destination("https://pay.example.com/lnurlp/a").kind == "lnurl"
    nwc = f"nostr+walletconnect://{'11' * 32}?relay=wss%3A%2F%2Frelay.example.com&secret={'22' * 32}"
    parsed = parse_destination(nwc)
    assert parsed.kind == "nwc" and "22" * 32 not in repr(parsed)
    assert parse_destination("a@127.0.0.1:8080", allow_http=True).target.startswith("http://127.0.0.1:8080/")
    for bad in ("http://pay.example.com/a", "ftp://x/y", "not a destination", "x" * 3000, "https://u:p@h/x"):
        with pytest.raises(ValueError, match="refund_to must be") as refused:
            parse_destination(bad)
        assert bad not in str(refused.value)


def _chain(paid: Paid, price: int) -> tuple[PaymentRequest, MeteringRecord]:
    request = decode_payload(paid.request.content, PaymentRequest)
    record = MeteringRecord(
        request="00" * 32,
        model="m",
        input_tokens=1,
        output_tokens=1,
        wall_ms=1.0,
        bytes_in=1,
        bytes_out=1,
        prompt_sha256="00" * 32,
        price_msat=price,
    )
    return request, record


def test_the_sdk_accepts_statements_that_match_the_request_paid() -> None:
    paid = Paid()
    request, record = _chain(paid, 3_000)
    node = settle_share("node", paid.hash_of("node"), paid.node_msat, 3_000, 100, refunding=True)
    fee = settle_share("router_fee", paid.hash_of("router_fee"), paid.fee_msat, 600, 100, refunding=True)
    proof = msgspec.structs.replace(paid.proof(), refund_to="a@example.com")
    record = msgspec.structs.replace(record, settlement=node)
    assert check_settlements(proof, request, record, fee, paid.router.pubkey) == (node, fee)


def _refused(paid: Paid, node: Settlement | None, fee: Settlement | None, *, refund_to: str | None) -> Link:
    request, record = _chain(paid, 3_000)
    proof = msgspec.structs.replace(paid.proof(), refund_to=refund_to)
    with pytest.raises(ChainError) as refused:
        check_settlements(proof, request, msgspec.structs.replace(record, settlement=node), fee, paid.router.pubkey)
    return refused.value.link


def test_the_sdk_refuses_statements_that_do_not_match() -> None:
    paid = Paid()
    good = settle_share("node", paid.hash_of("node"), paid.node_msat, 3_000, 100, refunding=True)
    fee = settle_share("router_fee", paid.hash_of("router_fee"), paid.fee_msat, 600, 100, refunding=True)
    cases = [
        msgspec.structs.replace(good, payment_hash="cd" * 32),  # another invoice
        msgspec.structs.replace(good, quoted_msat=good.quoted_msat + 1, kept_msat=1),  # not the amount paid
        msgspec.structs.replace(good, refund_msat=good.refund_msat - 1),  # does not add up
        msgspec.structs.replace(good, used_msat=2_000, refund_msat=good.refund_msat + 1_000),  # not metered use
    ]
    for bad in cases:
        assert _refused(paid, bad, None, refund_to="a@example.com") == Link.METERING
    assert _refused(paid, good, None, refund_to=None) == Link.METERING  # refunded to a destination never named
    wrong_fee = msgspec.structs.replace(fee, payment_hash=paid.hash_of("node"))
    assert _refused(paid, None, wrong_fee, refund_to="a@example.com") == Link.ROUTER_ANSWER
    _, record = _chain(paid, 3_000)
    with pytest.raises(ChainError):  # an unpaid request carries no settlement
        check_settlements(None, None, msgspec.structs.replace(record, settlement=good), None, paid.router.pubkey)
