"""Operator credentials for the router's ops views (`fedai status`, `fedai route explain`, `fedai peers`) and
`fedai admin-token new`, which makes one. A token is never taken from the router: it holds only its sha256."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from fedai.cli.devnet_file import DevnetInfo
from fedai.cli.keyfile import MAX_KEY_FILE_BYTES, SECRET_FILE_MODE, KeyInputError, load_secret
from fedai.cli.output import console, fail, print_json
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk.errors import FedaiClientError, RouterError

F = TypeVar("F", bound=Callable[..., Any])

HINT = "operator view: pass --admin-token (or FEDAI_ADMIN_TOKEN) or --admin-key (FEDAI_ADMIN_KEY)"


@dataclass(frozen=True)
class OpsAuth:
    """What the CLI sends to the ops endpoints: an operator token, an operator key (NIP-98), or nothing."""

    token: str | None = None
    keys: Keys | None = None

    @property
    def given(self) -> bool:
        return self.token is not None or self.keys is not None


def ops_hint(err: FedaiError | FedaiClientError, auth: OpsAuth) -> str | None:
    """What to do about a refused ops request."""
    if isinstance(err, RouterError) and err.status == 401 and not auth.given:
        return HINT
    return None


def admin_options(func: F) -> F:
    """--admin-token and --admin-key, shared by the ops commands."""
    options = [
        click.option(
            "--admin-token",
            envvar="FEDAI_ADMIN_TOKEN",
            help="Operator token, or a file holding it (env FEDAI_ADMIN_TOKEN; default: the devnet's).",
        ),
        click.option(
            "--admin-key",
            envvar="FEDAI_ADMIN_KEY",
            help="Operator secret key (nsec/hex) or a file holding it, signing NIP-98 (env FEDAI_ADMIN_KEY).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def read_token(value: str) -> str:
    """A token given directly or as the path of a file holding it (whitespace around it ignored)."""
    path = Path(value).expanduser()
    if not path.is_file():
        return value.strip()
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyInputError(f"{path}: too large to be a token file")
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyInputError(f"{path}: cannot read the token file ({type(exc).__name__})") from None


def resolve_admin(token: str | None, key: str | None, devnet: DevnetInfo | None) -> OpsAuth:
    """Explicit options win; else the devnet's operator token file, if it wrote one; else nothing (public view)."""
    try:
        if token:
            return OpsAuth(token=read_token(token))
        if key:
            return OpsAuth(keys=load_secret(key))
        if devnet is not None and devnet.admin_token_file:
            return OpsAuth(token=read_token(devnet.admin_token_file))
    except KeyInputError as exc:
        fail(f"operator credentials: {exc}", code=2)
    return OpsAuth()


def token_digest(token: str) -> str:
    """The sha256 hex the router is configured with (ROUTER_ADMIN_TOKEN_SHA256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh operator token and its digest."""
    token = "fo-" + secrets.token_urlsafe(32)
    return token, token_digest(token)


def load_or_create_token(path: Path) -> str:
    """The operator token kept in `path` (mode 0600), made on first use (the devnet's)."""
    if path.is_file():
        path.chmod(SECRET_FILE_MODE)
        return read_token(str(path))
    token, _ = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


@click.group("admin-token")
def admin_token_group() -> None:
    """Operator tokens for the router's ops views (the router stores only their sha256)."""


@admin_token_group.command("new")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def new_cmd(as_json: bool) -> None:
    """Make a token; add the printed digest to the router's ROUTER_ADMIN_TOKEN_SHA256 (comma-separated)."""
    token, digest = new_token()
    if as_json:
        print_json({"admin_token": token, "router_admin_token_sha256": digest})
        return
    console.print(f"operator token (shown once; for `fedai status --admin-token`, Prometheus): [bold]{token}[/]")
    console.print(f"add to the router's ROUTER_ADMIN_TOKEN_SHA256:                            {digest}")
