"""Install LNbits into its own venv in the user cache, once per (version, Python, platform).

LNbits pins libraries the project's own venv must not share (pydantic 1, an older starlette and nostr-sdk), so
it lives in a venv of its own: `<cache>/lnbits/<version>-py<major.minor>-<platform>/`, keyed by Python and
platform because some of its wheels are compiled. The install holds the inter-process lock beside that
directory (`fedai.service.filelock`), so parallel test workers install once; a venv cannot be moved, so it is
built in place and trusted only once `fedai-installed.json` is written, which `fedai.lnbits.provide` does
after LNbits has started from it once. A directory without that stamp is a failed or interrupted attempt:
it is removed and installed again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from fedai.llamacpp.cache import cache_root

DEFAULT_VERSION = "1.6.2"
# bolt11 (LNbits' invoice codec) takes any bitstring, but imports ConstBitStream, which bitstring 5 removed.
EXTRA_REQUIREMENTS = ("bitstring<5",)
SUPPORTED_PYTHONS = ((3, 12), (3, 11), (3, 10))  # LNbits 1.6.2: Requires-Python >=3.10,<3.13
STAMP = "fedai-installed.json"
PIP_TIMEOUT_S = 1800.0
LOG_TAIL_LINES = 25
# pip's words when PyPI cannot be reached (as opposed to a package that does not install): its retry warnings
# name the connection error; without retries it only finds no version of LNbits at all, which a reachable
# index never answers (a Python LNbits does not support still lists the versions it skipped).
_OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeoutError|ProxyError|No route to host|"
    r"requirement lnbits==\S+ \(from versions: none\)"
)
_UNSAFE = re.compile(r"[^0-9A-Za-z_.-]")


class LnbitsInstallError(RuntimeError):
    """LNbits cannot be installed or does not start from its venv; the message ends with the log's tail."""


class LnbitsUnreachable(LnbitsInstallError):
    """The install needs PyPI and PyPI cannot be reached (the only reason tests may skip LNbits)."""


@dataclass(frozen=True)
class LnbitsInstall:
    """An installed LNbits: its venv, the `lnbits` command and the site-packages it must run from."""

    version: str
    venv: Path
    site_packages: Path

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "lnbits"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def python_for_lnbits() -> tuple[str, tuple[int, int]]:
    """An interpreter LNbits supports: this one if it is, else python3.12/3.11/3.10 from PATH."""
    here = (sys.version_info.major, sys.version_info.minor)
    if here in SUPPORTED_PYTHONS:
        return sys.executable, here
    for major, minor in SUPPORTED_PYTHONS:
        found = shutil.which(f"python{major}.{minor}")
        if found:
            return found, (major, minor)
    wanted = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_PYTHONS)
    raise LnbitsInstallError(f"LNbits needs Python {wanted}; this is {here[0]}.{here[1]} and none is on PATH")


def install_dir(version: str, python: tuple[int, int], root: Path | None = None) -> Path:
    """`<cache>/lnbits/<version>-py<major.minor>-<platform>`: one venv per LNbits, Python and platform."""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+-]*", version):
        raise LnbitsInstallError(f"not a version: {version!r}")
    platform_key = _UNSAFE.sub("_", sysconfig.get_platform())
    return (root or cache_root()) / "lnbits" / f"{version}-py{python[0]}.{python[1]}-{platform_key}"


def installed(directory: Path, version: str) -> LnbitsInstall | None:
    """The install stamped in `directory`, if its stamp is there and names this version."""
    try:
        record = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != version:
        return None
    site = Path(str(record.get("site_packages", "")))
    found = LnbitsInstall(version, directory, site)
    return found if found.executable.is_file() and (site / "lnbits").is_dir() else None


def create_venv(version: str, interpreter: str, directory: Path) -> LnbitsInstall:
    """Make a venv in `directory` and pip-install LNbits into it (not stamped: see `write_stamp`)."""
    _run([interpreter, "-m", "venv", str(directory)], directory.parent / f"{directory.name}.log", "python -m venv")
    python = directory / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run([*pip, f"lnbits=={version}", *EXTRA_REQUIREMENTS], directory / "install.log", "pip install")
    site = Path(_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]))
    return LnbitsInstall(version, directory, site)


def _run(command: list[str], log_path: Path, what: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        try:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise LnbitsInstallError(f"{what} took over {PIP_TIMEOUT_S:.0f} s; log {log_path}") from None
    if result.returncode != 0:
        text = log_path.read_text(errors="replace")
        tail = "\n".join(text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:])
        kind = LnbitsUnreachable if _OFFLINE.search(text) else LnbitsInstallError
        raise kind(f"{what} failed (exit {result.returncode}); log {log_path}:\n{tail}")


def _output(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def write_stamp(install: LnbitsInstall, *, took: float) -> None:
    """Mark `install` as checked (atomically): from now on `installed()` finds it."""
    record = {
        "version": install.version,
        "site_packages": str(install.site_packages),
        "install_seconds": round(took, 1),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = install.venv / f".{STAMP}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, install.venv / STAMP)
