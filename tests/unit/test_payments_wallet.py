"""fedai.payments: the wallet values check themselves, the errors are typed, secrets never show."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import pytest

from fedai.payments.errors import InvalidInvoice, WalletError, WalletRefused, WalletUnavailable
from fedai.payments.secret import Secret, read_secret_file
from fedai.payments.wallet import Invoice, InvoiceState, InvoiceStatus, Payment, is_hex32, preimage_matches
from fedai.protocol.errors import FedaiError

PREIMAGE = os.urandom(32).hex()
PAYMENT_HASH = hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest()
OTHER = os.urandom(32).hex()


def test_preimage_matches_only_its_hash() -> None:
    assert preimage_matches(PREIMAGE, PAYMENT_HASH)
    assert not preimage_matches(OTHER, PAYMENT_HASH)
    assert not preimage_matches(PAYMENT_HASH, PREIMAGE)
    assert not preimage_matches(PREIMAGE.upper(), PAYMENT_HASH)  # lowercase hex only
    assert not preimage_matches(PREIMAGE[:-2], PAYMENT_HASH)


@pytest.mark.parametrize("value", ["", "00" * 31, "00" * 33, "zz" * 32, "AB" * 32, None, 5, b"\0" * 32])
def test_is_hex32_refuses(value: object) -> None:
    assert not is_hex32(value)


def test_paid_status_needs_the_matching_preimage() -> None:
    status = InvoiceStatus(PAYMENT_HASH, InvoiceState.PAID, 1000, PREIMAGE)
    assert status.state == "paid" and status.preimage == PREIMAGE
    with pytest.raises(ValueError, match="preimage"):
        InvoiceStatus(PAYMENT_HASH, InvoiceState.PAID, 1000, None)
    with pytest.raises(ValueError, match="preimage"):
        InvoiceStatus(PAYMENT_HASH, InvoiceState.PAID, 1000, OTHER)
    with pytest.raises(ValueError, match="preimage"):
        InvoiceStatus(PAYMENT_HASH, InvoiceState.PENDING, 0, OTHER)
    assert InvoiceStatus(PAYMENT_HASH, InvoiceState.PENDING).amount_msat == 0


def test_payment_and_invoice_check_their_fields() -> None:
    assert Payment(PAYMENT_HASH, PREIMAGE, 3).fee_msat == 3
    with pytest.raises(ValueError, match="preimage"):
        Payment(PAYMENT_HASH, OTHER, 0)
    with pytest.raises(ValueError, match="fee_msat"):
        Payment(PAYMENT_HASH, PREIMAGE, -1)
    with pytest.raises(ValueError, match="payment_hash"):
        Invoice("lnbc1", "ab", 1, 0)
    with pytest.raises(ValueError, match="amount_msat"):
        Invoice("lnbc1", PAYMENT_HASH, True, 0)
    with pytest.raises(ValueError, match="bolt11"):
        Invoice("", PAYMENT_HASH, 1, 0)


def test_errors_are_typed_protocol_errors() -> None:
    down = WalletUnavailable("lnd: timed out", "timeout")
    assert isinstance(down, WalletError) and isinstance(down, FedaiError)
    assert down.status == 503 and down.code == "payment_backend_unavailable" and down.retry_after_ms
    assert down.to_dict()["error"]["code"] == "payment_backend_unavailable"
    refused = WalletRefused("cln: insufficient balance", "insufficient_balance")
    assert refused.status == 402 and refused.code == "payment_refused" and refused.reason == "insufficient_balance"
    bad = InvalidInvoice("wrong_network", "invoice is for testnet, this wallet is on regtest")
    assert bad.status == 400 and bad.code == "invalid_invoice" and bad.reason == "wrong_network"
    assert "wrong_network" in repr(bad)


def test_secret_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("0201036c6e6402f801")
    text = f"{secret} {secret!r} {secret!s} {secret:>30} {[secret]} {dict(k=secret)}"
    assert "0201036c" not in text
    assert secret.reveal() == "0201036c6e6402f801"
    assert secret == Secret("0201036c6e6402f801") and secret != Secret("other") and secret != "0201036c6e6402f801"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config %s %r", secret, secret)
    assert "0201036c" not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_read_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "rune"
    path.write_text("  s3cr3t-rune\n")
    assert read_secret_file(path, "rune_file").reveal() == "s3cr3t-rune"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty") as empty:
        read_secret_file(path, "rune_file")
    assert "rune_file" in str(empty.value)
    with pytest.raises(ValueError, match="cannot read"):
        read_secret_file(tmp_path / "missing", "rune_file")
