"""Provision a running LNbits for a paying stack: a funded wallet per party, each wallet's spec in a file.

The compose stack's `lnbits-wallets` service runs it once its LNbits answers (`fedai lnbits provision`,
infra/README.md): the router and the nodes then read their spec files (ROUTER_WALLET, NODE_WALLET), and a client
outside the stack reads its own, written with the URL it reaches LNbits at. It runs again on every `compose up`:

- a fresh LNbits (its health route redirects to `/first_install`) gets a superuser with a random password, kept
  in `DIR/.lnbits-superuser`, and every party a new wallet (files left from an earlier LNbits are replaced);
- an LNbits set up before logs in with that password and creates only the wallets whose files are missing.

Spec files hold an admin key (a secret): mode 0600, owned by `owner` when given (the services' user, when this
runs as root on a fresh volume), written whole or not at all; nothing secret is printed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedai.lnbits.admin import LnbitsAdmin, LnbitsAdminError
from fedai.lnbits.server import HEALTH

SUPERUSER_FILE = ".lnbits-superuser"


class ProvisionError(RuntimeError):
    """LNbits cannot be provisioned as asked; the message says why (never a key or the password)."""


@dataclass(frozen=True)
class Party:
    """One wallet to provide: `name` (its file is `name.uri`), the sats it is funded with on creation, and the
    URL its spec names LNbits by (None: the URL provisioning reached it at)."""

    name: str
    sats: int
    public_url: str | None = None


def parse_party(text: str) -> Party:
    """`NAME=SATS` or `NAME=SATS@URL`, e.g. `router=1000`, `client=100000@http://127.0.0.1:5000`."""
    name, sep, rest = text.partition("=")
    sats, _, url = rest.partition("@")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ProvisionError(f"a party is NAME=SATS[@URL] with a name of letters, digits, - and _: {text!r}")
    if not sats.isdigit() or int(sats) <= 0:
        raise ProvisionError(f"{name}: fund a wallet with a positive whole number of sats, not {sats!r}")
    if url and not url.startswith(("http://", "https://")):
        raise ProvisionError(f"{name}: the public URL must be http:// or https://, not {url!r}")
    return Party(name, int(sats), url or None)


def write_secret(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    """Write `text` to `path` (mode 0600) through a temporary file in the same directory: whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            if owner is not None:
                os.fchown(file.fileno(), *owner)
            file.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_fresh(url: str, timeout: float = 10.0) -> bool:
    """True when LNbits has no superuser yet (its health route redirects to `/first_install`)."""
    try:
        answer = httpx.get(f"{url.rstrip('/')}{HEALTH}", follow_redirects=False, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ProvisionError(f"LNbits at {url} does not answer ({type(exc).__name__})") from None
    if answer.status_code == 307:
        return True
    if answer.status_code == 200:
        return False
    raise ProvisionError(f"LNbits at {url} answered its health check with HTTP {answer.status_code}")


def provision(
    url: str, directory: Path, parties: Sequence[Party], *, owner: tuple[int, int] | None = None
) -> dict[str, str]:
    """Provide every party's wallet file in `directory`; party → `created` or `kept`."""
    if len({p.name for p in parties}) != len(parties):
        raise ProvisionError("each party is named once")
    fresh = is_fresh(url)
    secret = directory / SUPERUSER_FILE
    if not fresh and not secret.is_file():
        raise ProvisionError(f"LNbits at {url} was set up already, and not from {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    with LnbitsAdmin(url) as admin:
        try:
            if fresh:
                write_secret(secret, admin.first_install(), owner)
            else:
                admin.login(secret.read_text().strip())
            for party in parties:
                path = directory / f"{party.name}.uri"
                if path.is_file() and not fresh:
                    done[party.name] = "kept"
                    continue
                wallet = admin.create_wallet(party.name)
                admin.fund(wallet, party.sats)
                spec = wallet.uri()
                if party.public_url is not None:
                    spec = spec.replace(_spec_base(url), _spec_base(party.public_url), 1)
                write_secret(path, spec, owner)
                done[party.name] = "created"
        except LnbitsAdminError as exc:
            raise ProvisionError(str(exc)) from None
    return done


def _spec_base(url: str) -> str:
    """How a wallet spec begins for an LNbits at `url`: `lnbits+http://host:port`."""
    return "lnbits+" + url.rstrip("/")
