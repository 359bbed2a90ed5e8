"""Client wallets bound to OpenAI callers (docs/payments.md#the-openai-edge): an API key or a NIP-98 identity
may come with the client's own wallet connection (NWC) and a budget; the router then pays the payees' invoices
from that wallet before dispatch. The router holds a spending permission the client can revoke in its wallet,
never the money.

`ROUTER_API_KEY_WALLETS`: comma list of `<who>:<budget msat>:<wallet file>`, where `who` is the 64-hex sha256
of an API key (as in ROUTER_API_KEYS) or a client's npub (a NIP-98 caller), and the file holds the wallet URI
(a secret: the router reads it, never prints or logs it). A wallet is opened on first use and kept open.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fedai.payments.config import check_wallet_spec, open_wallet
from fedai.payments.wallet import Wallet
from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import parse_pubkey
from fedai.service.config import ConfigError

VARIABLE = "ROUTER_API_KEY_WALLETS"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class WalletBinding:
    """One caller's wallet: `id` is `apikey:<sha256 of the key>` or `client:<pubkey hex>` (its budget's row)."""

    id: str
    budget_msat: int
    wallet_file: str


def binding_id(api_key_sha256: str | None, client: str) -> str:
    return f"apikey:{api_key_sha256}" if api_key_sha256 is not None else f"client:{client}"


def _who(value: str) -> str:
    if len(value) == 64 and set(value) <= _HEX:
        return f"apikey:{value}"
    if not value.startswith("npub1"):
        raise ConfigError(f"{VARIABLE}: each entry starts with an API key's sha256 (64 hex) or a client's npub")
    try:
        return f"client:{parse_pubkey(value)}"
    except KeyFormatError as exc:
        raise ConfigError(f"{VARIABLE}: {exc}") from None


def parse_wallet_bindings(value: str) -> dict[str, WalletBinding]:
    """`ROUTER_API_KEY_WALLETS` → bindings by id; each wallet file is parsed now (a bad one fails the start)."""
    bindings: dict[str, WalletBinding] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= 0 or not parts[2]:
            raise ConfigError(f"{VARIABLE}: each entry is <key sha256 or npub>:<budget msat>:<wallet file>")
        who = _who(parts[0])
        check_wallet_spec(parts[2], VARIABLE)
        bindings[who] = WalletBinding(who, int(parts[1]), parts[2])
    return bindings


class ClientWallets:
    """The bound wallets, opened on first use (a bad file is a typed error then: `open_wallet` names VARIABLE)."""

    def __init__(self, bindings: dict[str, WalletBinding]) -> None:
        self.bindings = bindings
        self._open: dict[str, Wallet] = {}
        self._lock = asyncio.Lock()

    def binding(self, api_key_sha256: str | None, client: str) -> WalletBinding | None:
        return self.bindings.get(binding_id(api_key_sha256, client))

    async def wallet(self, binding: WalletBinding) -> Wallet:
        async with self._lock:
            found = self._open.get(binding.id)
            if found is None:
                found = self._open[binding.id] = open_wallet(binding.wallet_file, VARIABLE)
            return found

    async def aclose(self) -> None:
        wallets, self._open = list(self._open.values()), {}
        for wallet in wallets:
            await wallet.aclose()
