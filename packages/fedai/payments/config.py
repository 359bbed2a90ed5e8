"""`open_wallet`: the wallet a spec names, through the factory registered for its scheme (docs/payments.md#wallet-uris).

`BACKENDS` maps a URI scheme to a factory that receives the parsed spec (fedai.payments.spec.WalletSpec). A
backend built elsewhere adds its schemes here, or calls `register_backend`, without touching the parsing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from fedai.payments.backends.cln import open_cln
from fedai.payments.backends.lnbits import open_lnbits
from fedai.payments.backends.lnd import open_lnd
from fedai.payments.invoice import network_prefix
from fedai.payments.spec import WalletConfigError, WalletSpec, parse_spec
from fedai.payments.wallet import Wallet

WalletFactory = Callable[[WalletSpec], Wallet]


def _open_nwc(spec: WalletSpec) -> Wallet:
    """NWC needs the relay pool (websockets) and rust-nostr's ciphers: imported only when a spec names it."""
    missing = [name for name in ("websockets", "nostr_sdk") if importlib.util.find_spec(name) is None]
    if missing:
        raise spec.error(f"NWC needs {' and '.join(missing)}: pip install 'fedai[pay]'")
    from fedai.payments.backends.nwc import open_nwc

    return open_nwc(spec)


# scheme → factory
BACKENDS: dict[str, WalletFactory] = {
    "lnd+https": open_lnd,
    "clnrest+https": open_cln,
    "lnbits+http": open_lnbits,
    "lnbits+https": open_lnbits,
    "nostr+walletconnect": _open_nwc,
}


def register_backend(scheme: str, factory: WalletFactory) -> None:
    """Add or replace the factory of `scheme` (lowercase, as in the URI)."""
    BACKENDS[scheme.lower()] = factory


def open_wallet(spec: str, variable: str = "--wallet") -> Wallet:
    """The wallet a spec names, ready to use (no request is sent yet). WalletConfigError names `variable`."""
    parsed = parse_spec(spec, variable)
    return _factory(parsed, variable)(parsed)


def _factory(parsed: WalletSpec, variable: str) -> WalletFactory:
    factory = BACKENDS.get(parsed.scheme)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise WalletConfigError(f"{variable}: unknown wallet scheme {parsed.scheme!r} (known: {known})")
    return factory


def check_wallet_spec(spec: str, variable: str) -> str:
    """Parse a wallet spec at start, without opening anything, so a bad one fails before any socket opens."""
    _factory(parse_spec(spec, variable), variable)
    return spec


def check_network(network: str, variable: str) -> str:
    """A Lightning network name (bitcoin, testnet, signet, regtest) for invoice checks; the error names `variable`."""
    try:
        network_prefix(network)
    except ValueError as exc:
        raise WalletConfigError(f"{variable}: {exc}") from None
    return network.strip().lower()
