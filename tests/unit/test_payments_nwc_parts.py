"""The NWC backend's pure parts: the connection URI, the encryption choice and ciphers, NIP-47 error codes."""

from __future__ import annotations

import pytest

from fedai.payments.backends import nip47
from fedai.payments.backends.nwc import NwcBackend
from fedai.payments.backends.nwc_client import _result
from fedai.payments.backends.nwc_uri import parse_nwc_uri
from fedai.payments.config import WalletConfigError, open_wallet
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.protocol.keys import Keys

WALLET = Keys.generate()
CLIENT = Keys.generate()
URI = f"nostr+walletconnect://{WALLET.pubkey}?relay=wss%3A%2F%2Frelay.example&relay=ws://127.0.0.1:7000&secret={CLIENT.secret_hex}&lud16=me@example.com"


def test_a_connection_uri_parses_and_keeps_its_secret_hidden() -> None:
    uri = parse_nwc_uri(URI)
    assert uri.wallet_pubkey == WALLET.pubkey
    assert uri.relays == ("wss://relay.example", "ws://127.0.0.1:7000")
    assert uri.secret.reveal() == CLIENT.secret_hex and CLIENT.secret_hex not in repr(uri)
    assert uri.lud16 == "me@example.com"
    assert parse_nwc_uri(uri.uri()) == uri


@pytest.mark.parametrize(
    "bad",
    [
        URI.replace("nostr+walletconnect", "https"),
        URI.replace(WALLET.pubkey, "npub1abc"),
        f"nostr+walletconnect://{WALLET.pubkey}?secret={CLIENT.secret_hex}",  # no relay
        URI.replace("ws://127.0.0.1:7000", "http://127.0.0.1:7000"),
        URI.replace(CLIENT.secret_hex, "00"),
        URI + f"&secret={CLIENT.secret_hex}",
    ],
)
def test_a_bad_connection_uri_is_refused_without_repeating_the_secret(bad: str) -> None:
    with pytest.raises(ValueError, match="NWC URI") as refused:
        parse_nwc_uri(bad)
    assert CLIENT.secret_hex not in str(refused.value)


def test_open_wallet_opens_nwc_and_names_the_variable_on_errors() -> None:
    assert isinstance(open_wallet(URI, "ROUTER_WALLET"), NwcBackend)
    with pytest.raises(WalletConfigError) as refused:
        open_wallet(URI.replace("relay=", "rel="), "ROUTER_WALLET")
    assert str(refused.value).startswith("ROUTER_WALLET: nostr+walletconnect wallet:")
    assert CLIENT.secret_hex not in str(refused.value)


def test_nip44_is_chosen_only_when_the_wallet_offers_it() -> None:
    assert nip47.chosen_encryption(None) is nip47.Encryption.NIP04
    assert nip47.chosen_encryption([["encryption", "nip04"]]) is nip47.Encryption.NIP04
    assert nip47.chosen_encryption([["encryption", "nip44_v2 nip04"]]) is nip47.Encryption.NIP44


@pytest.mark.parametrize("scheme", list(nip47.Encryption))
def test_both_ciphers_open_for_the_other_side_only(scheme: nip47.Encryption) -> None:
    sealed = nip47.encrypt(CLIENT, WALLET.pubkey, '{"method":"get_balance"}', scheme)
    assert nip47.decrypt(WALLET, CLIENT.pubkey, sealed) == '{"method":"get_balance"}'
    with pytest.raises(nip47.Nip47Error):
        nip47.decrypt(Keys.generate(), CLIENT.pubkey, sealed)


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        ("INSUFFICIENT_BALANCE", WalletRefused, "insufficient_balance"),
        ("QUOTA_EXCEEDED", WalletRefused, "quota_exceeded"),
        ("NOT_FOUND", WalletRefused, "unknown_invoice"),
        ("PAYMENT_FAILED", WalletRefused, "payment_failed"),
        ("OTHER", WalletRefused, "rejected"),
        ("SOMETHING_NEW", WalletRefused, "rejected"),
        ("RATE_LIMITED", WalletUnavailable, "rate_limited"),
        ("UNAUTHORIZED", WalletUnavailable, "unauthorized"),
        ("RESTRICTED", WalletUnavailable, "unauthorized"),
        ("NOT_IMPLEMENTED", WalletUnavailable, "not_implemented"),
        ("INTERNAL", WalletUnavailable, "backend_error"),
    ],
)
def test_nip47_error_codes_become_wallet_errors(code: str, kind: type[Exception], reason: str) -> None:
    with pytest.raises(kind) as raised:
        _result("pay_invoice", {"result_type": "pay_invoice", "error": {"code": code, "message": "no"}})
    assert getattr(raised.value, "reason", None) == reason


def test_a_result_of_another_method_is_unreadable() -> None:
    assert _result("get_balance", {"result_type": "get_balance", "result": {"balance": 1}}) == {"balance": 1}
    with pytest.raises(WalletUnavailable) as raised:
        _result("get_balance", {"result_type": "pay_invoice", "result": {"preimage": "00"}})
    assert raised.value.reason == "bad_reply"
