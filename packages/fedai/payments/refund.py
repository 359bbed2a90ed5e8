"""Usage-based settlement, pure (docs/payments.md#refunds): what a payee owes back of a share it was paid, and
where a refund may go.

A quote is a ceiling; the metering record states what was used. A payee refunds `quoted − used` of its own
share from its own wallet, unless that is below its dust threshold, in which case it keeps it and says so in its
signed `Settlement` (fedai.protocol.messages).
A destination is the client's: a Lightning address (`name@domain`, LNURL-pay, LUD-16), an LNURL-pay URL, or an
NWC connection URI (a wallet that makes invoices). Destinations are never logged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fedai.payments.backends.nwc_uri import parse_nwc_uri
from fedai.protocol.messages import PayeeRole, Settlement

MAX_DESTINATION_CHARS = 2048
_ADDRESS = re.compile(r"^([a-z0-9\-_.+]{1,64})@([a-z0-9\-.]{1,253}(?::[0-9]{1,5})?)$")

DestinationKind = Literal["lnurl", "nwc"]


def settle_share(
    role: PayeeRole, payment_hash: str, quoted_msat: int, used_msat: int, dust_msat: int, *, refunding: bool
) -> Settlement:
    """What a payee states about its share: the unused part refunded when the client named a destination
    (`refunding`) and it reaches `dust_msat`, kept otherwise. A payee that used more than it was quoted refunds
    nothing and states `used = quoted` (the quote is a ceiling: it is never paid more)."""
    if quoted_msat < 0 or used_msat < 0 or dust_msat < 0:
        raise ValueError("amounts must not be negative")
    used = min(used_msat, quoted_msat)
    unused = quoted_msat - used
    refund = unused if refunding and unused > 0 and unused >= dust_msat else 0
    return Settlement(
        role=role,
        payment_hash=payment_hash,
        quoted_msat=quoted_msat,
        used_msat=used,
        refund_msat=refund,
        kept_msat=unused - refund,
    )


def fee_used(quoted_fee_msat: int, used_work_msat: int, *, base_msat: int, ppm: int) -> int:
    """The router's fee on the work actually used (its quote's formula on the metered price), at most what was
    quoted: `base + ceil(used × ppm / 1e6)`."""
    fee = base_msat + -(-used_work_msat * ppm // 1_000_000)
    return min(fee, quoted_fee_msat)


def refund_key(payment_hash: str, role: str) -> str:
    """The wallet's idempotency key for the refund of one paid invoice: the same on every retry and replica."""
    return "fedai-refund-" + hashlib.sha256(f"fedai-refund|{role}|{payment_hash}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    target: str  # the LNURL-pay URL to ask, or the NWC connection URI (a secret): never logged

    def __repr__(self) -> str:
        return f"Destination({self.kind!r}, ***)"


def parse_destination(text: str, *, allow_http: bool = False) -> Destination:
    """Check a `refund_to` and say how to reach it; ValueError (never quoting it) for anything else.

    `allow_http` admits `http://` LNURL-pay URLs and addresses (tests on loopback only: a service refuses
    non-public addresses at connect time anyway unless it allows private endpoints)."""
    if not isinstance(text, str) or not text or len(text) > MAX_DESTINATION_CHARS or not text.isprintable():
        raise ValueError("refund_to must be a Lightning address, an LNURL-pay URL or an NWC connection URI")
    lowered = text.strip().lower()
    if lowered.startswith(("nostr+walletconnect:", "nostrwalletconnect:")):
        parse_nwc_uri(text)  # raises ValueError naming the part, never the secret
        return Destination("nwc", text.strip())
    scheme = "http" if allow_http else "https"
    address = _ADDRESS.match(lowered)
    if address is not None:
        name, domain = address.groups()
        return Destination("lnurl", f"{scheme}://{domain}/.well-known/lnurlp/{name}")
    parts = urlsplit(text.strip())
    if parts.scheme == "lnurlp" and parts.netloc:
        return Destination(
            "lnurl", f"{scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        )
    if parts.scheme in ("https", "http" if allow_http else "https") and parts.netloc and not parts.username:
        return Destination("lnurl", text.strip())
    raise ValueError("refund_to must be a Lightning address, an LNURL-pay URL or an NWC connection URI")
