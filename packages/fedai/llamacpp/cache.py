"""The cache outside the repo where built binaries and models live: its location, lock paths, atomic installs.

`$FEDAI_CACHE_DIR` if set, else `$XDG_CACHE_HOME/fedai`, else `~/.cache/fedai`. Each artifact is keyed by
name and version. Writers hold an inter-process `flock` (`fedai.service.filelock`, on `lock_path`) while
producing an artifact, produce it in a temporary path on the same filesystem and `os.replace` it into place,
so readers see all of it or nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

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
