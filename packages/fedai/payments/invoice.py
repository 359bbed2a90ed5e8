"""Decode and check a BOLT11 invoice before anyone pays it or accepts it as a payee's (docs/payments.md#invoice-checks).

Decoding is the `bolt11` library's: it verifies the bech32 checksum, the tagged fields and the signature (against
the `n` field when there is one, otherwise it recovers the signer's key, which becomes `payee`), and requires a
payment hash, a payment secret and a description or its hash. The checks here come around it: a length bound
before any parsing, one case, the network's prefix, the amount (exactly what is expected, with BOLT11's rule on
`p` amounts), the payment hash when one is expected, the payee when one is expected, and enough expiry left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import bolt11
from bolt11.exceptions import Bolt11SignatureVerifyException

from fedai.payments.errors import InvalidInvoice
from fedai.payments.wallet import is_hex32

MAX_LEN = 2048  # characters; invoices with a few route hints are ~300-1000
MIN_EXPIRY_S = 60  # the least expiry left for an invoice to be worth paying
MAX_FUTURE_S = 600  # an invoice dated further ahead than this is refused (clock skew allowed)

# the network a wallet is on → the currency prefix of its invoices (ln + prefix + amount)
NETWORKS: dict[str, str] = {"bitcoin": "bc", "mainnet": "bc", "testnet": "tb", "signet": "tbs", "regtest": "bcrt"}

REASONS = (
    "too_long",
    "malformed",
    "bad_signature",
    "wrong_network",
    "no_amount",
    "wrong_amount",
    "wrong_payment_hash",
    "wrong_payee",
    "expired",
    "expires_too_soon",
    "future_timestamp",
)

_HRP = re.compile(r"ln(bcrt|bc|tbs|tb)(\d*)([munp]?)")
_ASCII_PRINTABLE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    """What a checked invoice says. `payee` is the signer's compressed public key (hex)."""

    bolt11: str  # lowercase
    network: str  # the currency prefix: bc, tb, tbs, bcrt
    amount_msat: int
    payment_hash: str
    payee: str
    created_at: int
    expires_at: int
    description: str | None
    description_hash: str | None


def network_prefix(network: str) -> str:
    """The invoice prefix of a network name (bitcoin, testnet, signet, regtest); ValueError for another."""
    try:
        return NETWORKS[network.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Lightning network {network!r}: one of {', '.join(NETWORKS)}") from None


def _split_hrp(text: str, prefix: str | None) -> None:
    """Refuse an invoice of another network (any known one when `prefix` is None), or a `p` amount that is not a
    whole millisatoshi."""
    hrp = text[: text.rfind("1")] if "1" in text else ""
    match = _HRP.fullmatch(hrp)
    if match is None:
        raise InvalidInvoice("malformed", "not a BOLT11 invoice (unknown prefix)")
    if prefix is not None and match[1] != prefix:
        raise InvalidInvoice("wrong_network", f"invoice is for ln{match[1]}, this wallet is on ln{prefix}")
    if match[3] and not match[2]:
        raise InvalidInvoice("malformed", "invoice amount has a multiplier without digits")
    if match[3] == "p" and not match[2].endswith("0"):
        raise InvalidInvoice("malformed", "invoice amount is not a whole millisatoshi")


def decode_invoice(text: str, *, network: str | None, max_len: int = MAX_LEN) -> DecodedInvoice:
    """Decode `text` and check what needs no expectation: length, form, signature, network (InvalidInvoice).
    `network=None` accepts any known network (a wallet reading its own backend's invoice)."""
    if not isinstance(text, str):
        raise InvalidInvoice("malformed", "invoice must be a string")
    if len(text) > max_len:
        raise InvalidInvoice("too_long", f"invoice is {len(text)} characters, at most {max_len}")
    if not _ASCII_PRINTABLE.fullmatch(text) or (text != text.lower() and text != text.upper()):
        raise InvalidInvoice("malformed", "invoice must be printable ASCII in one case")
    text = text.lower()
    _split_hrp(text, None if network is None else network_prefix(network))
    try:
        decoded = bolt11.decode(text)
    except Bolt11SignatureVerifyException:
        raise InvalidInvoice("bad_signature", "invoice signature does not verify for its payee") from None
    except Exception as exc:  # noqa: BLE001 - the library raises many types (bitstring, coincurve, unicode) on bad input
        raise InvalidInvoice("malformed", f"invoice does not decode ({type(exc).__name__})") from None
    return _decoded(text, decoded)


def _decoded(text: str, decoded: bolt11.Bolt11) -> DecodedInvoice:
    payee = decoded.payee
    if not isinstance(payee, str) or len(payee) != 66:
        raise InvalidInvoice("bad_signature", "invoice has no recoverable payee key")
    payment_hash = decoded.payment_hash
    if not is_hex32(payment_hash):
        raise InvalidInvoice("malformed", "invoice payment hash is not 32 bytes")
    return DecodedInvoice(
        bolt11=text,
        network=decoded.currency,
        amount_msat=int(decoded.amount_msat or 0),
        payment_hash=payment_hash,
        payee=payee,
        created_at=decoded.date,
        expires_at=decoded.date + decoded.expiry,
        description=decoded.description,
        description_hash=decoded.description_hash,
    )


def check_invoice(
    text: str,
    *,
    amount_msat: int,
    network: str,
    now: float,
    payment_hash: str | None = None,
    payee: str | None = None,
    min_expiry_s: int = MIN_EXPIRY_S,
    max_len: int = MAX_LEN,
) -> DecodedInvoice:
    """Decode `text` and check it is for exactly `amount_msat`, with `payment_hash` and `payee` when given, on
    `network`, dated no later than now (with skew), and valid for at least `min_expiry_s` more seconds."""
    invoice = decode_invoice(text, network=network, max_len=max_len)
    if invoice.amount_msat == 0:
        raise InvalidInvoice("no_amount", "invoice names no amount")
    if invoice.amount_msat != amount_msat:
        raise InvalidInvoice("wrong_amount", f"invoice is for {invoice.amount_msat} msat, expected {amount_msat}")
    if payment_hash is not None and invoice.payment_hash != payment_hash.lower():
        raise InvalidInvoice("wrong_payment_hash", "invoice payment hash is not the expected one")
    if payee is not None and invoice.payee != payee.lower():
        raise InvalidInvoice("wrong_payee", "invoice is signed by another node than the expected payee")
    if invoice.created_at > now + MAX_FUTURE_S:
        raise InvalidInvoice("future_timestamp", "invoice is dated in the future")
    if invoice.expires_at <= now:
        raise InvalidInvoice("expired", "invoice has expired")
    if invoice.expires_at < now + min_expiry_s:
        raise InvalidInvoice("expires_too_soon", f"invoice expires in less than {min_expiry_s} s")
    return invoice
