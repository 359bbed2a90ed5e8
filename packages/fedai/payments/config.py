"""`open_wallet`: a wallet from its spec, a URI or a file holding one (docs/payments.md#wallet-uris).

A spec is `SCHEME://host:port?param=value&…` (`lnd+https`, `clnrest+https`, `lnbits+http`,
`nostr+walletconnect`, …) or the path of a file holding such a URI, or a JSON object `{"uri": …, param: value}`
whose other keys are parameters (so a secret can live in a file rather than in the environment). Each scheme maps
to a factory in `BACKENDS`; a backend added elsewhere registers its schemes there. Every error names the variable
or option the spec came from and never repeats the spec, which may hold a secret.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fedai.payments.secret import Secret, read_secret_file
from fedai.payments.wallet import Wallet
from fedai.service.config import ConfigError

MAX_SPEC_FILE = 64 * 1024
DEFAULT_TIMEOUT_S = 10.0


class WalletConfigError(ConfigError):
    """A wallet spec that cannot be used; the message names the variable (NODE_WALLET, ROUTER_WALLET, --wallet)."""


@dataclass(frozen=True, slots=True)
class WalletSpec:
    """A parsed spec. `params` may hold secrets: read them with `secret()`; the repr shows only the scheme."""

    variable: str
    scheme: str  # lowercase, e.g. "lnd+https"
    uri: Secret = field(repr=False)  # the whole URI as given (NWC puts its secret in it)
    host: str = ""
    port: int | None = None
    path: str = ""
    params: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def transport(self) -> str:
        """What follows `+` in the scheme (`https` in `lnd+https`), or "" without one."""
        return self.scheme.partition("+")[2]

    @property
    def base_url(self) -> str:
        """`transport://host:port/path` for REST backends."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.transport}://{host}{port}{self.path.rstrip('/')}"

    def error(self, message: str) -> WalletConfigError:
        return WalletConfigError(f"{self.variable}: {self.scheme} wallet: {message}")

    def param(self, name: str, default: str | None = None) -> str | None:
        """One parameter's value; an error if it is given more than once."""
        values = self.params.get(name, ())
        if len(values) > 1:
            raise self.error(f"parameter {name!r} is given {len(values)} times")
        return values[0] if values else default

    def required(self, name: str, why: str) -> str:
        value = self.param(name)
        if not value:
            raise self.error(f"parameter {name!r} is required ({why})")
        return value

    def path_param(self, name: str, why: str) -> Path:
        """A required parameter naming a file that exists."""
        path = Path(self.required(name, why)).expanduser()
        if not path.is_file():
            raise self.error(f"{name}: {path} is not a readable file")
        return path

    def secret(self, inline: str, file_param: str, why: str) -> Secret:
        """A secret given inline (`inline=…`, e.g. from a JSON spec file) or as a file (`file_param=/path`)."""
        value = self.param(inline)
        if value:
            return Secret(value)
        try:
            return read_secret_file(self.path_param(file_param, why), file_param)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def seconds(self, name: str, default: float) -> float:
        value = self.param(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(f"{name} must be a number of seconds") from None
        if not 0 < number <= 600:
            raise self.error(f"{name} must be between 0 and 600 seconds")
        return number

    def __repr__(self) -> str:
        return f"WalletSpec({self.variable!r}, {self.scheme!r}, host={self.host!r}, port={self.port!r})"


WalletFactory = Callable[[WalletSpec], Wallet]

# scheme → factory. Another backend registers here (or through register_backend), without touching the parsing.
BACKENDS: dict[str, WalletFactory] = {}


def register_backend(scheme: str, factory: WalletFactory) -> None:
    """Add or replace the factory of `scheme` (lowercase, as in the URI)."""
    BACKENDS[scheme.lower()] = factory


def _from_file(path: Path, variable: str) -> tuple[str, dict[str, list[str]]]:
    """(URI, extra params) from a spec file: a URI on its own, or a JSON object with `uri`."""
    try:
        if path.stat().st_size > MAX_SPEC_FILE:
            raise WalletConfigError(f"{variable}: {path} is larger than {MAX_SPEC_FILE} bytes")
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise WalletConfigError(f"{variable}: cannot read the wallet file {path} ({type(exc).__name__})") from None
    if not text.startswith(("{", "[")):
        return text, {}
    try:
        data = json.loads(text)
    except ValueError:
        raise WalletConfigError(f"{variable}: {path} is neither a wallet URI nor a JSON object") from None
    if not isinstance(data, dict) or not isinstance(data.get("uri"), str):
        raise WalletConfigError(f'{variable}: {path} must be a JSON object with a "uri" string')
    extra: dict[str, list[str]] = {}
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        if key != "uri" and not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise WalletConfigError(f"{variable}: {path}: {key!r} must be a string, a number or a list of them")
        if key != "uri":
            extra[key] = [str(v) for v in values]
    return data["uri"], extra


def parse_spec(spec: str, variable: str = "--wallet") -> WalletSpec:
    """Parse a wallet spec (a URI, or a file holding one) without opening anything."""
    spec = spec.strip()
    if not spec:
        raise WalletConfigError(f"{variable}: a wallet URI or file is required")
    extra: dict[str, list[str]] = {}
    if "://" not in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WalletConfigError(f"{variable}: not a wallet URI (SCHEME://…) nor an existing file")
        spec, extra = _from_file(path, variable)
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError:
        raise WalletConfigError(f"{variable}: the wallet URI does not parse (bad host or port)") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in spec:
        raise WalletConfigError(f"{variable}: the wallet URI has no SCHEME://")
    params: dict[str, list[str]] = parse_qs(parts.query, keep_blank_values=True)
    for key, values in extra.items():
        params.setdefault(key, []).extend(values)
    return WalletSpec(
        variable=variable,
        scheme=scheme,
        uri=Secret(spec),
        host=parts.hostname or "",
        port=port,
        path=parts.path,
        params={key: tuple(values) for key, values in params.items()},
    )


def open_wallet(spec: str, variable: str = "--wallet") -> Wallet:
    """The wallet a spec names, ready to use (no request is sent yet). WalletConfigError names `variable`."""
    parsed = parse_spec(spec, variable)
    factory = BACKENDS.get(parsed.scheme)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise WalletConfigError(f"{variable}: unknown wallet scheme {parsed.scheme!r} (known: {known})")
    return factory(parsed)


# -- the LNbits and NWC backends (each imported when a spec names it) -----------------------------------


def _open_lnbits(spec: WalletSpec) -> Wallet:
    """`lnbits+http(s)://host:port[/prefix]?key=…` (or `key_file=`): admin key to pay, invoice key to receive."""
    from fedai.payments.backends.lnbits import LnbitsBackend

    if not spec.host:
        raise spec.error("the URI needs the LNbits host (lnbits+https://host:port?key=…)")
    key = spec.secret("key", "key_file", "the wallet's admin key, or its invoice key to only receive")
    network = spec.param("network", "bitcoin") or "bitcoin"
    return LnbitsBackend(spec.base_url, key, network=network, timeout=spec.seconds("timeout", DEFAULT_TIMEOUT_S))


def _open_nwc(spec: WalletSpec) -> Wallet:
    """`nostr+walletconnect://<wallet pubkey>?relay=…&secret=…` as the wallet hands it out (`network=` optional)."""
    missing = [name for name in ("websockets", "nostr_sdk") if importlib.util.find_spec(name) is None]
    if missing:
        raise spec.error(f"NWC needs {' and '.join(missing)}: pip install 'fedai[relay]'")
    from fedai.payments.backends.nwc import NwcBackend
    from fedai.payments.backends.nwc_uri import parse_nwc_uri

    try:
        uri = parse_nwc_uri(spec.uri.reveal())
    except ValueError as exc:
        raise spec.error(str(exc)) from None
    network = spec.param("network", "bitcoin") or "bitcoin"
    return NwcBackend(uri, network=network, timeout=spec.seconds("timeout", 30.0))


for _scheme, _factory in (
    ("lnbits+http", _open_lnbits),
    ("lnbits+https", _open_lnbits),
    ("nostr+walletconnect", _open_nwc),
):
    register_backend(_scheme, _factory)
