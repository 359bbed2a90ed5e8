"""`ensure_lnbits`: a cached LNbits install that has started once on this machine, installed first if needed.

Two processes never install at once: the second waits on the lock beside the install directory
(`fedai.service.filelock`) and then uses the first one's install.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from fedai.llamacpp.cache import Progress, lock_path, no_progress
from fedai.lnbits.install import (
    DEFAULT_VERSION,
    LnbitsInstall,
    create_venv,
    install_dir,
    installed,
    python_for_lnbits,
    write_stamp,
)
from fedai.lnbits.server import smoke_start
from fedai.service.filelock import file_lock


def ensure_lnbits(version: str = DEFAULT_VERSION, *, progress: Progress | None = None) -> LnbitsInstall:
    """A stamped LNbits install of `version`, installed (and started once) first if needed.

    Raises `LnbitsUnreachable` when PyPI cannot be reached, `LnbitsInstallError` for any other failure.
    """
    say = progress or no_progress
    interpreter, python = python_for_lnbits()
    directory = install_dir(version, python)
    found = installed(directory, version)
    if found is not None:
        return found
    with file_lock(lock_path(directory), progress=say, what=f"installing LNbits {version}"):
        found = installed(directory, version)  # done by the process we waited for
        if found is not None:
            return found
        return _install(version, interpreter, directory, say)


def _install(version: str, interpreter: str, directory: Path, say: Progress) -> LnbitsInstall:
    if directory.exists():
        say(f"removing an unfinished LNbits install in {directory}")
        shutil.rmtree(directory)
    started = time.monotonic()
    say(f"installing LNbits {version} into {directory} (once; about 300 MB)")
    install = create_venv(version, interpreter, directory)
    say(f"installed in {time.monotonic() - started:.0f} s; starting LNbits once to check it")
    smoke_start(install)
    write_stamp(install, took=time.monotonic() - started)
    say(f"LNbits {version} ready in {time.monotonic() - started:.0f} s: {directory}")
    return install
