"""`fedai lnbits provision` against a real LNbits (FakeWallet): a fresh LNbits gets its superuser and a funded
wallet per party, whose spec files open as wallets (one under its public URL); a second run keeps what is there
and makes what is missing; an LNbits set up by someone else, an unreachable one, and bad parties are refused
with one line and nothing written."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedai.lnbits import LnbitsInstall, LnbitsServer
from fedai.lnbits.provision import SUPERUSER_FILE, ProvisionError, parse_party, provision
from fedai.payments.config import open_wallet
from tests.support.lnbits import LnbitsHarness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fresh_lnbits(lnbits_install: LnbitsInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LnbitsServer]:
    """An LNbits of this module's own, never set up (the session's one has its superuser already)."""
    root = tmp_path_factory.mktemp("lnbits-provision")
    with LnbitsServer(lnbits_install, root / "data", log_path=root / "lnbits.log") as server:
        yield server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fedai.cli.main", "lnbits", "provision", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


async def _balance(spec_file: Path) -> int:
    wallet = open_wallet(str(spec_file), "--wallet")
    try:
        return await wallet.balance_msat()
    finally:
        await wallet.aclose()


async def test_a_fresh_lnbits_gets_funded_wallets_then_a_rerun_keeps_them(
    fresh_lnbits: LnbitsServer, tmp_path: Path
) -> None:
    url = fresh_lnbits.url
    public = url.replace("127.0.0.1", "localhost")  # another name for the same LNbits, as a host client has
    wallets = tmp_path / "wallets"
    wallets.mkdir()
    (wallets / "router.uri").write_text("left over from an earlier LNbits\n")

    first = _cli(url, str(wallets), "router=1000", "node-1=2", f"client=5000@{public}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 3
    for name in ("router.uri", "node-1.uri", "client.uri", SUPERUSER_FILE):
        assert stat.S_IMODE((wallets / name).stat().st_mode) == 0o600, name
    assert (wallets / "router.uri").read_text().startswith(f"lnbits+{url}/?key=")  # the stale file replaced
    client_spec = (wallets / "client.uri").read_text()
    assert client_spec.startswith(f"lnbits+{public}/?key=")
    keys = [(wallets / f"{n}.uri").read_text().split("key=")[1].strip() for n in ("router", "node-1", "client")]
    assert not [k for k in keys if k in first.stdout + first.stderr], "a key was printed"
    assert (await _balance(wallets / "router.uri"), await _balance(wallets / "node-1.uri")) == (1_000_000, 2_000)
    assert await _balance(wallets / "client.uri") == 5_000_000

    router_spec = (wallets / "router.uri").read_text()
    (wallets / "node-1.uri").unlink()
    again = provision(url, wallets, [parse_party("router=1000"), parse_party("node-1=3"), parse_party("node-2=4")])
    assert again == {"router": "kept", "node-1": "created", "node-2": "created"}
    assert (wallets / "router.uri").read_text() == router_spec
    assert (await _balance(wallets / "node-1.uri"), await _balance(wallets / "node-2.uri")) == (3_000, 4_000)


def test_an_lnbits_set_up_elsewhere_is_refused_and_nothing_is_written(lnbits: LnbitsHarness, tmp_path: Path) -> None:
    refused = _cli(lnbits.url, str(tmp_path / "w"), "router=1000")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: LNbits at {lnbits.url} was set up already, and not from {tmp_path / 'w'}"
    )
    assert not (tmp_path / "w").exists()


def test_an_unreachable_lnbits_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match=r"^LNbits at http://127\.0\.0\.1:9 does not answer \(ConnectError\)$"):
        provision("http://127.0.0.1:9", tmp_path, [parse_party("router=1")])


@pytest.mark.parametrize(
    ("party", "says"),
    [
        ("router", "NAME=SATS"),
        ("=5", "NAME=SATS"),
        ("../etc=5", "NAME=SATS"),
        ("router=0", "positive whole number of sats"),
        ("router=1.5", "positive whole number of sats"),
        ("client=5@ftp://x", "must be http:// or https://"),
    ],
)
def test_bad_parties_are_refused_before_lnbits_is_asked(party: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match=says):
        parse_party(party)
    refused = _cli("http://127.0.0.1:9", str(tmp_path / "w"), party)
    assert refused.returncode == 1 and says in refused.stderr
    assert not (tmp_path / "w").exists()


def test_a_party_named_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="each party is named once"):
        provision("http://127.0.0.1:9", tmp_path, [parse_party("a=1"), parse_party("a=2")])
