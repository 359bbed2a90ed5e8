"""A Nostr Wallet Connect (NIP-47) connection URI: `nostr+walletconnect://<wallet pubkey>?relay=…&secret=…`.

The wallet service's public key (hex), one or more relays it listens on (`relay=`, repeated), the secret key
(hex) this client signs and encrypts its requests with, and optionally the wallet's `lud16` address. The
secret is a spending permission: held in a `Secret`, never shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from fedai.payments.secret import Secret

SCHEME = "nostr+walletconnect"
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_RELAYS = 8


@dataclass(frozen=True)
class NwcUri:
    wallet_pubkey: str
    relays: tuple[str, ...]
    secret: Secret = field(repr=False)
    lud16: str | None = None

    def uri(self) -> str:
        """The URI again (it holds the secret: hand it only to the party that connects)."""
        query = "&".join(f"relay={quote(relay, safe='')}" for relay in self.relays)
        query += f"&secret={self.secret.reveal()}"
        if self.lud16:
            query += f"&lud16={quote(self.lud16, safe='@')}"
        return f"{SCHEME}://{self.wallet_pubkey}?{query}"


def parse_nwc_uri(uri: str) -> NwcUri:
    """Parse and check a connection URI; ValueError (naming the part, never the secret) if it is not one."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() not in (SCHEME, "nostrwalletconnect"):
        raise ValueError(f"an NWC URI starts with {SCHEME}://")
    pubkey = (parts.netloc or parts.path.lstrip("/")).lower()
    if not _HEX64.fullmatch(pubkey):
        raise ValueError("the NWC URI's wallet public key must be 64 hex characters")
    params = parse_qs(parts.query)
    relays = tuple(dict.fromkeys(params.get("relay", [])))
    if not relays or len(relays) > MAX_RELAYS:
        raise ValueError(f"an NWC URI names 1 to {MAX_RELAYS} relays (relay=wss://…)")
    if not all(relay.startswith(("ws://", "wss://")) for relay in relays):
        raise ValueError("the NWC URI's relays must be ws:// or wss:// URLs")
    secrets = params.get("secret", [])
    if len(secrets) != 1 or not _HEX64.fullmatch(secrets[0].lower()):
        raise ValueError("the NWC URI needs one secret of 64 hex characters")
    lud16 = params.get("lud16", [None])[0]
    return NwcUri(pubkey, relays, Secret(secrets[0].lower()), lud16)
