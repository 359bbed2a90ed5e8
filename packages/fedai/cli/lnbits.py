"""`fedai lnbits install|start|provision`: a local LNbits with FakeWallet for trying payments (docs/payments.md).

`install` puts LNbits into its cached venv once (from PyPI) and starts it once to check it. `start` runs it on
loopback with a data directory, sets up its superuser and the wallets asked for (`--wallet NAME=SATS`), writes
each wallet's spec (`lnbits+http://…?key=<admin key>`) to `<data dir>/wallets/<name>.uri` (mode 0600, for
`NODE_WALLET=<file>` and the like), and runs until Ctrl-C. `provision` gives an LNbits running elsewhere (the
compose stack's) a funded wallet per party, again on every run without redoing what is there
(fedai.lnbits.provision). FakeWallet money is not money: test use only.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path

import click

from fedai.cli.output import err_console, fail, print_json
from fedai.lnbits import (
    LnbitsAdmin,
    LnbitsAdminError,
    LnbitsInstallError,
    LnbitsServer,
    LnbitsServerError,
    ensure_lnbits,
)
from fedai.lnbits.provision import ProvisionError, parse_party, provision


def _say(line: str) -> None:
    err_console.print(f"[dim]{line}[/dim]", highlight=False, soft_wrap=True, markup=False)


@click.group("lnbits")
def lnbits_group() -> None:
    """A local LNbits (FakeWallet) for tests and trying payments: install it, run it with funded wallets."""


@lnbits_group.command("install")
@click.option("--json", "as_json", is_flag=True, help="Print the install as JSON.")
def install_cmd(as_json: bool) -> None:
    """Install LNbits into its cached venv (once; about a minute) and check that it starts."""
    try:
        install = ensure_lnbits(progress=_say)
    except LnbitsInstallError as exc:
        fail(str(exc))
    if as_json:
        print_json({"version": install.version, "venv": str(install.venv)})
    else:
        click.echo(f"LNbits {install.version}: {install.venv}")


def _wallet_args(values: tuple[str, ...]) -> list[tuple[str, int]]:
    wallets = []
    for value in values:
        name, _, sats = value.partition("=")
        if not name.isidentifier() or not sats.isdigit():
            raise click.BadParameter(f"{value!r} is not NAME=SATS", param_hint="--wallet")
        wallets.append((name, int(sats)))
    return wallets


@lnbits_group.command("start")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Where LNbits keeps its data.")
@click.option("--wallet", "wallets", multiple=True, help="NAME=SATS: a wallet funded with SATS (repeatable).")
def start_cmd(port: int | None, data_dir: Path | None, wallets: tuple[str, ...]) -> None:
    """Run LNbits on loopback until Ctrl-C, with the wallets asked for."""
    wanted = _wallet_args(wallets)
    root = data_dir or Path(tempfile.mkdtemp(prefix="fedai-lnbits-"))
    try:
        server = LnbitsServer(ensure_lnbits(progress=_say), root / "data", port=port, log_path=root / "lnbits.log")
        with server, LnbitsAdmin(server.url) as admin:
            admin.first_install()
            for name, sats in wanted:
                made = admin.create_wallet(name)
                if sats:
                    admin.fund(made, sats)
                spec = root / "wallets" / f"{name}.uri"
                spec.parent.mkdir(parents=True, exist_ok=True)
                spec.touch(mode=0o600)
                spec.write_text(made.uri() + "\n")
                click.echo(f"wallet {name}: {sats} sats, spec in {spec}")
            click.echo(f"LNbits on {server.url} (data in {root}); Ctrl-C stops it")
            _wait_for_stop()
    except (LnbitsInstallError, LnbitsServerError, LnbitsAdminError) as exc:
        fail(str(exc))


def _wait_for_stop() -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    _say("stopping LNbits")


def _owner(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise click.BadParameter(f"{value!r} is not UID[:GID]", param_hint="--owner")
    return int(uid), int(gid or uid)


@lnbits_group.command("provision")
@click.argument("url")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("parties", nargs=-1, required=True)
@click.option("--owner", default=None, help="UID[:GID] to own the files (when run as root for a service's user).")
def provision_cmd(url: str, directory: Path, parties: tuple[str, ...], owner: str | None) -> None:
    """A funded wallet per party in the LNbits at URL, each spec in DIRECTORY/NAME.uri (mode 0600).

    PARTIES are NAME=SATS, or NAME=SATS@PUBLIC_URL for a party that reaches LNbits at another URL (a client
    outside the compose network). Run again, it keeps the wallets whose files exist; a fresh LNbits gets new
    ones. Its superuser's password stays in DIRECTORY/.lnbits-superuser.
    """
    who = _owner(owner)
    try:
        done = provision(url, directory, [parse_party(p) for p in parties], owner=who)
    except ProvisionError as exc:
        fail(str(exc))
    for name, what in done.items():
        click.echo(f"wallet {name}: {what} ({directory / (name + '.uri')})")
