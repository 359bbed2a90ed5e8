"""The llama.cpp cache: where it is, its lock paths, atomic installs and scratch directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedai.llamacpp.cache import cache_root, install_file, lock_path, scratch_dir


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
