"""An inter-process lock on a file (`flock`) that records its holder's pid.

Used for one build (or download) of a cache artifact at a time, and one devnet per data dir. The lock is
released when the descriptor closes, so a process that dies never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


class LockHeld(Exception):
    """Another process holds the lock (and `wait=False` was asked); `owner` is the pid it wrote, or "?"."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"{path} is held by pid {owner}")
        self.path = path
        self.owner = owner


def _say_nothing(_line: str) -> None:
    pass


@contextlib.contextmanager
def file_lock(
    path: Path, *, wait: bool = True, progress: Callable[[str], None] = _say_nothing, what: str = ""
) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) and write our pid into it.

    When another process holds it: with `wait`, tell `progress` (what we wait for, then how long it took) and
    wait; without, raise `LockHeld` at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            if not wait:
                raise LockHeld(path, owner) from None
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
