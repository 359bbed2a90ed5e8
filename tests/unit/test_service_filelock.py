"""The inter-process file lock: a second process waits (and is told why) or, when asked not to wait, fails."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedai.service.filelock import LockHeld, file_lock

HOLD_LOCK = """
import sys
from pathlib import Path
from fedai.service.filelock import file_lock
with file_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says so
"""


def test_a_second_process_waits_for_the_lock_and_is_told_why(tmp_path: Path) -> None:
    lock = tmp_path / "build.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": "packages"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        said: list[str] = []
        acquired = threading.Event()

        def contender() -> None:
            with file_lock(lock, progress=said.append, what="building llama-server"):
                acquired.set()

        thread = threading.Thread(target=contender)
        thread.start()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:  # the contender found the lock taken
            time.sleep(0.01)
        assert not acquired.is_set(), "the lock is held by another process"
        assert said and f"pid {holder.pid}" in said[0] and "building llama-server" in said[0]
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert acquired.wait(10)
        thread.join(10)
        assert "finished" in said[-1]
        assert lock.read_text().strip() == str(os.getpid()), "the holder's pid is recorded in the lock file"
    finally:
        holder.kill()
        holder.wait()


def test_an_uncontended_lock_says_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    with file_lock(tmp_path / "sub" / "x.lock", progress=said.append):
        assert (tmp_path / "sub" / "x.lock").exists()
    assert said == []


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A lock file held by another process until the test ends."""
    lock = tmp_path / "devnet.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": "packages"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield lock, holder
    finally:
        holder.kill()
        holder.wait()


def test_without_wait_a_held_lock_fails_at_once_naming_its_holder(held: tuple[Path, subprocess.Popen[str]]) -> None:
    lock, holder = held
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockHeld) as caught, file_lock(lock, wait=False, progress=said.append):
        pytest.fail("the lock is held by another process")
    assert time.monotonic() - started < 5 and said == []
    assert caught.value.owner == str(holder.pid) and caught.value.path == lock
    assert lock.read_text().strip() == str(holder.pid), "the holder's pid is left as it was"


def test_without_wait_a_free_lock_is_taken(tmp_path: Path) -> None:
    with file_lock(tmp_path / "devnet.lock", wait=False):
        assert (tmp_path / "devnet.lock").read_text().strip() == str(os.getpid())
    with file_lock(tmp_path / "devnet.lock", wait=False):  # released on exit: free again
        pass
