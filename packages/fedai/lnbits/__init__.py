"""A local LNbits for tests and the devnet: install it once, run it with FakeWallet, set up funded wallets.

- `ensure_lnbits()`: a cached venv with LNbits (installed from PyPI on first use, started once before it is
  trusted); `LnbitsUnreachable` when PyPI cannot be reached.
- `LnbitsServer(install, data_dir)`: one LNbits process on loopback with the FakeWallet funding source.
- `LnbitsAdmin(url)`: the first install (superuser), wallets (`LnbitsWallet`), funds.

Layers, bottom up: `install` (the venv), `server` (runs an install), `provide` (installs and starts it once
before trusting it), `admin` (talks to a running LNbits).
See docs/payments.md ("Test wallets: LNbits").
"""

from fedai.lnbits.admin import LnbitsAdmin, LnbitsAdminError, LnbitsWallet
from fedai.lnbits.install import DEFAULT_VERSION, LnbitsInstall, LnbitsInstallError, LnbitsUnreachable
from fedai.lnbits.provide import ensure_lnbits
from fedai.lnbits.server import LnbitsServer, LnbitsServerError

__all__ = [
    "DEFAULT_VERSION",
    "LnbitsAdmin",
    "LnbitsAdminError",
    "LnbitsInstall",
    "LnbitsInstallError",
    "LnbitsServer",
    "LnbitsServerError",
    "LnbitsUnreachable",
    "LnbitsWallet",
    "ensure_lnbits",
]
