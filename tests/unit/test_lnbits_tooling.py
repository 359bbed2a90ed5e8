"""fedai.lnbits: where the venv lives, when an install is trusted, what LNbits runs with, how pip failures read."""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from pathlib import Path

import pytest

from fedai.lnbits.admin import LnbitsWallet
from fedai.lnbits.install import (
    STAMP,
    LnbitsInstall,
    LnbitsInstallError,
    LnbitsUnreachable,
    _run,
    install_dir,
    installed,
    python_for_lnbits,
    write_stamp,
)
from fedai.lnbits.server import lnbits_env
from fedai.payments.backends.lnbits import LnbitsBackend
from fedai.payments.config import open_wallet


def test_the_install_directory_is_keyed_by_version_python_and_platform(tmp_path: Path) -> None:
    path = install_dir("1.6.2", (3, 11), tmp_path)
    platform = re.sub(r"[^0-9A-Za-z_.-]", "_", sysconfig.get_platform())
    assert path == tmp_path / "lnbits" / f"1.6.2-py3.11-{platform}"
    assert install_dir("1.6.2", (3, 12), tmp_path) != path
    with pytest.raises(LnbitsInstallError):
        install_dir("../1.6.2", (3, 11), tmp_path)


def test_this_python_is_used_when_lnbits_supports_it() -> None:
    interpreter, version = python_for_lnbits()
    if (sys.version_info.major, sys.version_info.minor) in ((3, 10), (3, 11), (3, 12)):
        assert (interpreter, version) == (sys.executable, sys.version_info[:2])
    else:
        assert version in ((3, 10), (3, 11), (3, 12)) and interpreter != sys.executable


def _fake_install(root: Path) -> LnbitsInstall:
    site = root / "lib" / "site-packages"
    (site / "lnbits").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "lnbits").write_text("#!/bin/sh\n")
    return LnbitsInstall("1.6.2", root, site)


def test_an_install_is_trusted_only_once_stamped_for_its_version(tmp_path: Path) -> None:
    install = _fake_install(tmp_path / "venv")
    assert installed(install.venv, "1.6.2") is None  # built but never started: not trusted
    write_stamp(install, took=12.5)
    assert installed(install.venv, "1.6.2") == install
    assert installed(install.venv, "1.6.3") is None
    assert json.loads((install.venv / STAMP).read_text())["install_seconds"] == 12.5
    (install.site_packages / "lnbits").rmdir()
    assert installed(install.venv, "1.6.2") is None  # the stamp alone is not enough


def test_lnbits_runs_with_fakewallet_its_data_dir_and_none_of_our_settings(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/ours",
        "VIRTUAL_ENV": "/ours",
        "LNBITS_BACKEND_WALLET_CLASS": "LndWallet",
    }
    env = lnbits_env(tmp_path, base | {"LNBITS_ADMIN_USERS": "someone"})
    assert env["LNBITS_BACKEND_WALLET_CLASS"] == "FakeWallet"
    assert env["LNBITS_DATA_FOLDER"] == str(tmp_path)
    assert env["PATH"] == "/usr/bin"
    assert not {"PYTHONPATH", "VIRTUAL_ENV", "LNBITS_ADMIN_USERS"} & set(env)


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        ("ERROR: ... NewConnectionError('Failed to establish a new connection')", LnbitsUnreachable),
        ("Temporary failure in name resolution", LnbitsUnreachable),
        (
            "ERROR: Could not find a version that satisfies the requirement lnbits==1.6.2 (from versions: none)",
            LnbitsUnreachable,
        ),
        (
            "ERROR: Could not find a version that satisfies the requirement lnbits==9.9.9 (from versions: 1.6.1, 1.6.2)",
            LnbitsInstallError,
        ),
    ],
)
def test_a_pip_failure_says_whether_pypi_was_unreachable(tmp_path: Path, output: str, kind: type[Exception]) -> None:
    log = tmp_path / "install.log"
    with pytest.raises(LnbitsInstallError) as failed:
        _run(["sh", "-c", f"echo {output!r}; exit 1"], log, "pip install")
    assert type(failed.value) is kind
    assert output.split("(")[0] in str(failed.value) and str(log) in str(failed.value)


def test_a_wallets_uri_opens_the_lnbits_backend_and_hides_its_key() -> None:
    made = LnbitsWallet("http://127.0.0.1:5000", "wid", "w", "adminkey123", "invoicekey456")
    assert "adminkey123" not in repr(made)
    wallet = open_wallet(made.uri(), "NODE_WALLET")
    assert isinstance(wallet, LnbitsBackend) and "adminkey123" not in repr(wallet)
    assert made.uri(admin=False).endswith("?key=invoicekey456")
