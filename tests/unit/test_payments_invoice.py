"""fedai.payments.invoice: every BOLT11 check, on invoices signed here with throwaway keys."""

from __future__ import annotations

import os
import time

import pytest
from bech32 import CHARSET, bech32_decode, bech32_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedai.payments.errors import InvalidInvoice
from fedai.payments.invoice import MAX_LEN, REASONS, DecodedInvoice, check_invoice, decode_invoice, network_prefix
from tests.support.invoices import InvoiceSigner

NOW = int(time.time())
SIGNER = InvoiceSigner(date=NOW)  # dated as the checks' `now`, however long the suite has run before these tests


def reason_of(text: str, **kwargs: object) -> str:
    args: dict[str, object] = {"amount_msat": 21_000, "network": "regtest", "now": NOW, **kwargs}
    with pytest.raises(InvalidInvoice) as caught:
        check_invoice(text, **args)  # type: ignore[arg-type]
    assert caught.value.reason in REASONS
    assert caught.value.status == 400 and caught.value.code == "invalid_invoice"
    return caught.value.reason


def rechecksummed(text: str, hrp: str | None = None, data: list[int] | None = None) -> str:
    """The invoice with another prefix or data part and a valid bech32 checksum (the signature is not redone)."""
    old_hrp, old_data = bech32_decode(text)
    assert old_hrp is not None and old_data is not None
    return bech32_encode(hrp or old_hrp, old_data if data is None else data)


def test_a_good_invoice_decodes_with_everything_exposed() -> None:
    text, payment_hash, _ = SIGNER.invoice(21_000, description="node share", expiry=600, date=NOW)
    invoice = check_invoice(text, amount_msat=21_000, network="regtest", now=NOW, payment_hash=payment_hash)
    assert invoice.amount_msat == 21_000 and invoice.payment_hash == payment_hash
    assert invoice.payee == SIGNER.pubkey and invoice.network == "bcrt"
    assert invoice.created_at == NOW and invoice.expires_at == NOW + 600
    assert invoice.description == "node share" and invoice.description_hash is None
    assert check_invoice(text.upper(), amount_msat=21_000, network="regtest", now=NOW).bolt11 == text
    assert check_invoice(text, amount_msat=21_000, network="regtest", now=NOW, payee=SIGNER.pubkey.upper())


def test_an_invoice_naming_its_payee_verifies_against_it() -> None:
    text, _, _ = SIGNER.invoice(21_000, include_payee=True)
    assert decode_invoice(text, network="regtest").payee == SIGNER.pubkey


def test_a_signature_by_another_key_than_the_named_payee_is_refused() -> None:
    impostor, victim = InvoiceSigner(date=NOW), InvoiceSigner(date=NOW)
    text, _, _ = impostor.invoice(21_000, include_payee=True, payee_override=victim.pubkey)
    assert reason_of(text) == "bad_signature"


def test_a_tampered_amount_changes_the_recovered_payee() -> None:
    text, _, _ = SIGNER.invoice(21_000)
    forged = rechecksummed(text, hrp="lnbcrt420n")  # 42,000 msat, same signature
    decoded = decode_invoice(forged, network="regtest")  # recovery yields some key, just not the signer's
    assert decoded.amount_msat == 42_000 and decoded.payee != SIGNER.pubkey
    assert reason_of(forged, amount_msat=42_000, payee=SIGNER.pubkey) == "wrong_payee"


@pytest.mark.parametrize(
    ("network", "currency"), [("bitcoin", "bc"), ("testnet", "tb"), ("signet", "tbs"), ("regtest", "bcrt")]
)
def test_networks(network: str, currency: str) -> None:
    text, _, _ = SIGNER.invoice(21_000, currency=currency)
    assert text.startswith(f"ln{currency}2")
    assert check_invoice(text, amount_msat=21_000, network=network, now=NOW).network == currency
    others = [n for n in ("bitcoin", "testnet", "signet", "regtest") if n != network]
    for other in others:
        assert reason_of(text, network=other) == "wrong_network"


def test_unknown_network_name() -> None:
    assert network_prefix(" Mainnet ") == "bc"
    with pytest.raises(ValueError, match="liquid"):
        network_prefix("liquid")


def test_amount_checks() -> None:
    assert reason_of(SIGNER.invoice(21_001)[0]) == "wrong_amount"
    assert reason_of(SIGNER.invoice(20_999)[0]) == "wrong_amount"
    assert reason_of(SIGNER.invoice(None)[0]) == "no_amount"
    assert reason_of(SIGNER.invoice(21_000_000)[0]) == "wrong_amount"


def test_payment_hash_and_payee_expectations() -> None:
    text, payment_hash, _ = SIGNER.invoice(21_000)
    assert reason_of(text, payment_hash=os.urandom(32).hex()) == "wrong_payment_hash"
    assert reason_of(text, payee=InvoiceSigner().pubkey) == "wrong_payee"
    assert check_invoice(text, amount_msat=21_000, network="regtest", now=NOW, payment_hash=payment_hash.upper())


def test_time_checks() -> None:
    assert reason_of(SIGNER.invoice(21_000, date=NOW - 3600, expiry=3600)[0]) == "expired"
    assert reason_of(SIGNER.invoice(21_000, date=NOW - 7200, expiry=60)[0]) == "expired"
    assert reason_of(SIGNER.invoice(21_000, date=NOW - 3570, expiry=3600)[0]) == "expires_too_soon"
    assert reason_of(SIGNER.invoice(21_000, date=NOW, expiry=300)[0], min_expiry_s=301) == "expires_too_soon"
    assert reason_of(SIGNER.invoice(21_000, date=NOW + 3600)[0]) == "future_timestamp"
    near_future = SIGNER.invoice(21_000, date=NOW + 60)[0]  # a payee's clock a minute ahead is fine
    assert check_invoice(near_future, amount_msat=21_000, network="regtest", now=NOW).created_at == NOW + 60


def test_length_is_bounded_before_decoding() -> None:
    text, _, _ = SIGNER.invoice(21_000)
    assert reason_of(text + "q" * (MAX_LEN - len(text) + 1)) == "too_long"
    assert reason_of(text, max_len=len(text) - 1) == "too_long"
    assert reason_of("x" * 10_000_000) == "too_long"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lnbcrt1",
        "not an invoice",
        "lnbcrt210n1\x00abc",
        "lnbcrt210n1pjé",
        "lnxyz210n1qqqqqqqqqqqqqqqq",
        "lnbcrtn1qqqqqqqqqqqqqqqq",  # a multiplier without digits
        "lnbcrt15p1qqqqqqqqqqqqqqqq",  # 1.5 msat
    ],
)
def test_malformed(text: str) -> None:
    assert reason_of(text) == "malformed"


def test_mixed_case_bad_checksum_truncation_and_not_a_string() -> None:
    text, _, _ = SIGNER.invoice(21_000)
    assert reason_of(text[:20] + text[20:].upper()) == "malformed"
    flipped = text[:-1] + ("q" if text[-1] != "q" else "p")
    assert reason_of(flipped) == "malformed"
    assert reason_of(text[:-20]) == "malformed"
    assert reason_of(rechecksummed(text, data=bech32_decode(text)[1][:50])) == "malformed"  # type: ignore[index]
    assert reason_of(12345) == "malformed"  # type: ignore[arg-type]


def test_a_wrong_length_p_field_is_skipped_so_the_invoice_has_no_payment_hash() -> None:
    text, _, _ = SIGNER.invoice(21_000)
    _, data = bech32_decode(text)
    assert data is not None
    # after the 7-group timestamp the first field is `p` (52 groups): declare 51 instead and drop one group
    assert CHARSET[data[7]] == "p" and data[8] * 32 + data[9] == 52
    shortened = [*data[:8], 1, 19, *data[10:61], *data[62:]]
    assert reason_of(rechecksummed(text, data=shortened)) == "malformed"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_invoices_raise_only_invalid_invoice(data: st.DataObject) -> None:
    text, _, _ = SIGNER.invoice(21_000, include_payee=data.draw(st.booleans()))
    hrp, groups = bech32_decode(text)
    assert hrp is not None and groups is not None
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(groups) - 1))
        groups = [*groups[:index], data.draw(st.integers(0, 31)), *groups[index + 1 :]]
    cut = data.draw(st.integers(0, len(groups)))
    mutated = bech32_encode(hrp, groups[:cut] if data.draw(st.booleans()) else groups)
    outcome: InvalidInvoice | DecodedInvoice
    try:
        outcome = check_invoice(mutated, amount_msat=21_000, network="regtest", now=NOW, min_expiry_s=0)
    except InvalidInvoice as exc:
        outcome = exc
    if isinstance(outcome, InvalidInvoice):
        assert outcome.reason in REASONS
    else:
        assert outcome.amount_msat == 21_000 and len(outcome.payment_hash) == 64
