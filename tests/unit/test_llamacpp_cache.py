"""The llama.cpp cache: where it is, the inter-process lock, atomic installs and scratch directories."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedai.llamacpp.cache import cache_root, file_lock, install_file, lock_path, scratch_dir


def test_cache_root_prefers_fedai_cache_dir_then_xdg_then_home() -> None:
    assert cache_root({"FEDAI_CACHE_DIR": "/x/cache", "XDG_CACHE_HOME": "/y"}) == Path("/x/cache")
    assert cache_root({"FEDAI_CACHE_DIR": "  ", "XDG_CACHE_HOME": "/y"}) == Path("/y/fedai")
    assert cache_root({}) == Path.home() / ".cache" / "fedai"


def test_cache_root_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"


def test_each_version_has_its_own_lock() -> None:
    assert lock_path(Path("/c/llama-server/0.3.36")) == Path("/c/llama-server/0.3.36.lock")
    assert lock_path(Path("/c/llama-server/0.3.37")) != lock_path(Path("/c/llama-server/0.3.36"))


HOLD_LOCK = """
import sys
from pathlib import Path
from fedai.llamacpp.cache import file_lock
with file_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says so
"""


def test_a_second_process_waits_for_the_lock_and_is_told_why(tmp_path: Path) -> None:
    lock = tmp_path / "build.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "packages"})  # fmt: skip
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


def test_install_file_replaces_atomically_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "out" / "llama-server"
    target.parent.mkdir()
    target.write_text("old")
    source = tmp_path / "built"
    source.write_text("new")
    install_file(source, target, mode=0o755)
    assert target.read_text() == "new" and os.access(target, os.X_OK)
    assert not source.exists()
    assert [p.name for p in target.parent.iterdir()] == ["llama-server"], "no temporary file left behind"


def test_scratch_dir_is_removed_even_on_error(tmp_path: Path) -> None:
    seen: list[Path] = []

    def failing_build() -> None:
        with scratch_dir(tmp_path, ".build-") as work:
            seen.append(work)
            (work / "big").write_text("x")
            raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        failing_build()
    assert seen[0].parent == tmp_path and not seen[0].exists()
