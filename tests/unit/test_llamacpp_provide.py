"""What `ensure_llama_server` provides: portable by default, native keyed by CPU, smoke-tested before it is
cached, stamped per CPU, and rebuilt portable when a binary dies with SIGILL.

The build is replaced by stand-in binaries (tests/support/fake_llama.py): a shell script that kills itself
with SIGILL stands for a native build on the wrong CPU. The CPU fingerprint is set by the test.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedai.llamacpp import provide
from fedai.llamacpp.build import Flavor, LlamaBuildError, binary_path, legacy_binary_path, version_lock
from fedai.llamacpp.cache import Progress, no_progress
from fedai.llamacpp.models import model_path
from fedai.llamacpp.provide import SIGILL_MARKER, ensure_llama_server
from fedai.llamacpp.smoke import SmokeResult, smoke_test, stamped
from fedai.service.filelock import file_lock
from tests.support import fake_llama
from tests.support.fake_llama import Writer

V = "0.3.36"
REBUILD = "cached llama-server died with SIGILL (illegal instruction) on this CPU; rebuilding a portable binary"


@dataclass
class Builds:
    """Stands in for `compile_llama_server`: writes a stand-in binary per flavor and records each build."""

    portable: Writer = fake_llama.serving
    native: Writer = fake_llama.serving
    calls: list[str] = field(default_factory=list)
    release: threading.Event | None = None

    def __call__(
        self, version: str, work: Path, log_path: Path, *, native: bool = False, progress: Progress = no_progress
    ) -> Path:
        self.calls.append("native" if native else "portable")
        if self.release is not None:
            self.release.wait(10)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("fake build\n")
        return (self.native if native else self.portable)(work / "build" / "bin" / "llama-server")


@dataclass
class Env:
    cache: Path
    model: Path
    builds: Builds
    smoked: list[Path]
    said: list[str]
    cpu: list[str]

    def ensure(self, **options: object) -> Path:
        return ensure_llama_server(V, model=self.model, progress=self.said.append, **options)  # type: ignore[arg-type]

    def portable(self) -> Path:
        return binary_path(V, Flavor.portable())

    def native(self) -> Path:
        return binary_path(V, Flavor.native_for(self.cpu[0]))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Env:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(cache))
    monkeypatch.delenv("FEDAI_LLAMA_SERVER", raising=False)
    monkeypatch.delenv("FEDAI_LLAMA_NATIVE", raising=False)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF fake weights")
    builds = Builds()
    smoked: list[Path] = []
    cpu = ["cpu-a"]

    def counted_smoke(binary: Path, served: Path) -> SmokeResult:
        smoked.append(binary)
        return smoke_test(binary, served)

    monkeypatch.setattr(provide, "compile_llama_server", builds)
    monkeypatch.setattr(provide, "smoke_test", counted_smoke)
    monkeypatch.setattr(provide, "cpu_fingerprint", lambda: cpu[0])
    monkeypatch.setattr(provide, "cpu_name", lambda: f"Test CPU {cpu[0]}")
    return Env(cache, model, builds, smoked, [], cpu)


def test_the_default_build_is_portable_smoke_tested_then_cached_and_stamped(env: Env) -> None:
    path = env.ensure()
    assert path == env.portable() == env.cache / "llama-server" / V / f"portable-{os.uname().machine}" / "llama-server"
    assert env.builds.calls == ["portable"]
    assert len(env.smoked) == 1 and env.smoked[0] != path, "smoke-tested in scratch, before it was installed"
    assert stamped(path, env.model, "cpu-a")
    assert any("smoke-testing it on model.gguf" in line for line in env.said)
    assert env.ensure() == path
    assert env.builds.calls == ["portable"] and len(env.smoked) == 1, "stamped: no second build nor smoke test"


def test_a_stamped_binary_is_returned_without_waiting_for_the_lock(env: Env) -> None:
    """Another process may hold the version's lock for minutes (building another flavor): a checked binary is
    returned at once."""
    path = env.ensure()
    results: list[Path] = []
    with file_lock(version_lock(V)):
        caller = threading.Thread(target=lambda: results.append(env.ensure()), daemon=True)
        caller.start()
        caller.join(10)
        assert results == [path], "returned while the lock was held"


def test_fedai_llama_native_builds_for_this_cpu_only(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "1")
    on_a = env.ensure()
    assert on_a == env.native() and on_a.parent.name == "native-cpu-a"
    assert env.builds.calls == ["native"]
    env.cpu[0] = "cpu-b"  # the same cache seen from another CPU
    on_b = env.ensure()
    assert on_b.parent.name == "native-cpu-b" and on_b != on_a
    assert env.builds.calls == ["native", "native"], "cpu-a's native binary is never used on cpu-b"
    assert env.ensure(native=False) == env.portable(), "the argument overrides the variable"


def test_a_pass_is_stamped_per_cpu(env: Env) -> None:
    path = env.ensure()
    env.cpu[0] = "cpu-b"
    assert env.ensure() == path
    assert env.builds.calls == ["portable"] and env.smoked[-1] == path, "checked again on the new CPU, not rebuilt"
    assert len(env.smoked) == 2
    assert env.ensure() == path and len(env.smoked) == 2


def test_the_unkeyed_binary_of_older_fedai_is_ignored(env: Env) -> None:
    legacy = fake_llama.serving(legacy_binary_path(V))
    assert legacy == env.cache / "llama-server" / V / "llama-server"
    assert env.ensure() == env.portable()
    assert env.builds.calls == ["portable"]
    assert any(line.startswith(f"ignoring {legacy}: an older fedai built it with -march=native") for line in env.said)
    assert legacy.is_file(), "left in place for the older fedai that may still use it"


@pytest.mark.parametrize("dying", [fake_llama.sigill, fake_llama.sigill_via_shell, fake_llama.dying_on_completion])
def test_a_cached_binary_that_dies_with_sigill_is_rebuilt_portable(env: Env, dying: Writer) -> None:
    dying(env.portable())
    path = env.ensure()
    assert path == env.portable() and env.builds.calls == ["portable"]
    assert REBUILD in env.said
    assert smoke_test(path, env.model).ok and stamped(path, env.model, "cpu-a")


def test_a_cached_native_binary_that_dies_falls_back_to_portable_and_is_remembered(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "1")
    native = fake_llama.sigill(env.native())
    assert env.ensure() == env.portable()
    assert env.builds.calls == ["portable"], "the native build is not retried on this CPU"
    assert "cached native llama-server died with SIGILL (illegal instruction) on this CPU; using a portable binary" in (
        env.said
    )
    assert not native.exists() and (native.parent / SIGILL_MARKER).is_file()
    smoked = len(env.smoked)
    env.said.clear()
    assert env.ensure() == env.portable()
    assert len(env.smoked) == smoked and env.builds.calls == ["portable"], "straight to the stamped portable binary"
    assert any("a native llama-server died with SIGILL" in line for line in env.said)


def test_a_fresh_native_build_that_dies_is_not_cached_and_portable_is_built(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "1")
    env.builds.native = fake_llama.dying_on_completion
    assert env.ensure() == env.portable()
    assert env.builds.calls == ["native", "portable"]
    assert not env.native().exists() and (env.native().parent / SIGILL_MARKER).is_file()


def test_a_portable_build_that_dies_raises_with_the_log_and_is_not_cached(env: Env) -> None:
    env.builds.portable = fake_llama.sigill
    with pytest.raises(LlamaBuildError) as caught:
        env.ensure()
    message = str(caught.value)
    assert "freshly built portable llama-server died with SIGILL (illegal instruction) on this CPU" in message
    assert "starting llama-server" in message, "the server log's tail"
    assert env.builds.calls == ["portable"] and not env.portable().exists()


def test_a_cached_portable_that_dies_is_rebuilt_once_never_in_a_loop(env: Env) -> None:
    fake_llama.sigill(env.portable())
    env.builds.portable = fake_llama.sigill_via_shell
    with pytest.raises(LlamaBuildError, match="freshly built portable llama-server died with SIGILL"):
        env.ensure()
    assert env.builds.calls == ["portable"] and REBUILD in env.said
    assert not env.portable().exists()


def test_a_cached_binary_that_fails_otherwise_is_reported_not_rebuilt(env: Env) -> None:
    fake_llama.failing(env.portable())
    with pytest.raises(LlamaBuildError, match=r"cached llama-server .* fails on model.gguf(.|\n)*failed to load model"):
        env.ensure()
    assert env.builds.calls == [] and env.portable().exists()


def test_fedai_llama_server_is_used_as_is(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mine = fake_llama.sigill(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("FEDAI_LLAMA_SERVER", str(mine))
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "1")
    assert env.ensure() == mine
    assert env.builds.calls == [] and env.smoked == [] and not env.cache.exists(), "no build, no smoke test"


def test_without_a_model_the_tiny_model_is_the_smoke_test(env: Env) -> None:
    path = ensure_llama_server(V)
    assert stamped(path, model_path("tiny"), "cpu-a") and model_path("tiny").is_file()


def test_a_missing_model_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    with pytest.raises(LlamaBuildError, match="no model file at"):
        ensure_llama_server(V, model=tmp_path / "nope.gguf")
    assert env.builds.calls == []


def test_two_concurrent_callers_build_once(env: Env) -> None:
    env.builds.release = threading.Event()
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(env.ensure()))
    first.start()
    deadline = time.monotonic() + 10
    while not env.builds.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    waiting: list[str] = []

    def second_caller() -> None:
        results.append(ensure_llama_server(V, model=env.model, progress=waiting.append))

    second = threading.Thread(target=second_caller)
    second.start()
    while not waiting and time.monotonic() < deadline:  # the second caller is waiting on the lock
        time.sleep(0.01)
    assert waiting and "waiting for another process" in waiting[0]
    env.builds.release.set()
    first.join(10)
    second.join(10)
    assert env.builds.calls == ["portable"], "built exactly once"
    assert results == [env.portable()] * 2
    assert len(env.smoked) == 1, "the second caller found the first one's stamp"


def test_stale_scratch_directories_are_removed_under_the_lock(env: Env) -> None:
    stale = env.cache / "llama-server" / f".build-{V}-abc"
    (stale / "src").mkdir(parents=True)
    other = env.cache / "llama-server" / ".build-3.0.0-abc"
    other.mkdir()
    env.ensure()
    assert not stale.exists() and other.exists(), "only this version's leftovers"
