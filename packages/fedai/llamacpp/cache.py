"""The cache outside the repo where built binaries and models live: its location, a lock, atomic installs.

`$FEDAI_CACHE_DIR` if set, else `$XDG_CACHE_HOME/fedai`, else `~/.cache/fedai`. Each artifact is keyed by
name and version. Writers hold an inter-process `flock` while producing an artifact, produce it in a
temporary path on the same filesystem and `os.replace` it into place, so readers see all of it or nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

Progress = Callable[[str], None]

CACHE_ENV = "FEDAI_CACHE_DIR"


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """The cache's root directory (not created)."""
    env = os.environ if environ is None else environ
    explicit = env.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fedai"


def no_progress(_line: str) -> None:
    """The default progress sink: say nothing."""


def lock_path(directory: Path) -> Path:
    """The lock guarding `directory`'s creation: a sibling named `<directory name>.lock`."""
    return directory.parent / f"{directory.name}.lock"


@contextlib.contextmanager
def file_lock(path: Path, *, progress: Progress = no_progress, what: str = "") -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing); tell `progress` when we have to wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            progress(f"waiting for another process (pid {owner}) {what or 'holding ' + str(path)}")
            started = time.monotonic()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            progress(f"the other process finished after {time.monotonic() - started:.0f} s")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def install_file(source: Path, target: Path, *, mode: int | None = None) -> Path:
    """Atomic install: move (or copy) `source` next to `target` under a temporary name, then rename over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if _same_filesystem(source, target.parent):
            os.replace(source, tmp)
        else:
            _copy(source, tmp)
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _same_filesystem(path: Path, directory: Path) -> bool:
    return path.stat().st_dev == directory.stat().st_dev


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary working directory under `parent` (same filesystem as the cache), removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as name:
        yield Path(name)
