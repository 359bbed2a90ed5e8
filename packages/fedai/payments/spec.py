"""A wallet spec, parsed: a URI or a file holding one (docs/payments.md#wallet-uris).

A spec is `SCHEME://host:port?param=value&…` (`lnd+https`, `clnrest+https`, `lnbits+http`,
`nostr+walletconnect`, …) or the path of a file holding such a URI, or a JSON object `{"uri": …, param: value}`
whose other keys are parameters (so a secret can live in a file rather than in the environment). Each scheme maps
to a factory in fedai.payments.config.BACKENDS, which receives the parsed `WalletSpec`. Every error names the
variable or option the spec came from and never repeats the spec, which may hold a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fedai.payments.secret import Secret, read_secret_file
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
