"""Building llama-server: cache keys, the cmake command lines, progress parsing, locking and clear errors.

The real build is exercised by the session fixtures (tests/support/llama.py); here its steps are replaced
where they would take minutes.
"""

from __future__ import annotations

import io
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from fedai.llamacpp import build
from fedai.llamacpp.build import (
    CMAKE_OPTIONS,
    LlamaBuildError,
    binary_path,
    build_command,
    build_percent,
    configure_command,
    ensure_llama_server,
    extract_vendored,
)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDAI_LLAMA_SERVER", raising=False)
    return tmp_path / "cache"


def fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake llama-server\n")
    path.chmod(0o755)
    return path


def test_the_binary_is_cached_per_version(cache: Path) -> None:
    assert binary_path("0.3.36") == cache / "llama-server" / "0.3.36" / "llama-server"
    assert binary_path("0.3.37") != binary_path("0.3.36")
    with pytest.raises(LlamaBuildError, match="not a version"):
        binary_path("../../etc")


def test_a_cached_binary_is_used_without_building(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = fake_binary(binary_path("0.3.36"))

    def no_build(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("must not build")

    monkeypatch.setattr(build, "build_into", no_build)
    assert ensure_llama_server("0.3.36") == cached


def test_fedai_llama_server_names_an_existing_binary(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = fake_binary(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("FEDAI_LLAMA_SERVER", str(mine))
    assert ensure_llama_server() == mine
    mine.chmod(stat.S_IRUSR)
    with pytest.raises(LlamaBuildError, match=r"FEDAI_LLAMA_SERVER=.* is not an executable file"):
        ensure_llama_server()
    assert not cache.exists(), "nothing was built"


def test_two_concurrent_callers_build_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    release = threading.Event()

    def slow_build(version: str, target: Path, *, progress: object) -> None:
        calls.append(version)
        release.wait(10)
        fake_binary(target)

    monkeypatch.setattr(build, "build_into", slow_build)
    results: list[Path] = []
    said: list[str] = []
    first = threading.Thread(target=lambda: results.append(ensure_llama_server("9.9.9")))
    first.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=lambda: results.append(ensure_llama_server("9.9.9", progress=said.append)))
    second.start()
    while not said and time.monotonic() < deadline:  # the second caller is waiting on the lock
        time.sleep(0.01)
    assert said and "waiting for another process" in said[0]
    release.set()
    first.join(10)
    second.join(10)
    assert calls == ["9.9.9"], "built exactly once"
    assert (cache / "llama-server" / "9.9.9.lock").is_file()
    assert results == [binary_path("9.9.9")] * 2


def test_configure_turns_off_gpus_network_and_shared_libs() -> None:
    argv = configure_command("cmake", "Ninja", Path("/src"), Path("/b"))
    assert argv[:7] == ["cmake", "-S", "/src", "-B", "/b", "-G", "Ninja"]
    for option in ("GGML_CUDA=OFF", "GGML_METAL=OFF", "GGML_VULKAN=OFF", "GGML_BLAS=OFF", "BUILD_SHARED_LIBS=OFF",
                   "LLAMA_CURL=OFF", "LLAMA_OPENSSL=OFF", "LLAMA_USE_PREBUILT_UI=OFF", "CMAKE_BUILD_TYPE=Release"):  # fmt: skip
        assert f"-D{option}" in argv
    assert len(argv) == 7 + len(CMAKE_OPTIONS)


def test_only_the_server_target_is_built_with_all_cores() -> None:
    argv = build_command("cmake", Path("/b"), 2)
    assert argv == ["cmake", "--build", "/b", "--target", "llama-server", "--config", "Release", "-j", "2"]


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("[ 42%] Building CXX object src/llama.cpp.o", 42),
        ("[100%] Built target llama-server", 100),
        ("[12/48] Building CXX object common/arg.cpp.o", 25),
        ("-- Configuring done", None),
        ("In file included from x.h:3", None),
    ],
)
def test_build_percent_reads_make_and_ninja(line: str, percent: int | None) -> None:
    assert build_percent(line) == percent


def sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_vendor_llama_cpp_is_extracted(tmp_path: Path) -> None:
    archive = sdist(tmp_path / "x.tar.gz", {
        "llama_cpp_python-0.3.36/pyproject.toml": "",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": "project(x)",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/src/a.cpp": "int a;",
    })  # fmt: skip
    source = extract_vendored(archive, tmp_path / "src")
    assert source == tmp_path / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    assert (source / "src" / "a.cpp").read_text() == "int a;"
    assert not (tmp_path / "src" / "llama_cpp_python-0.3.36" / "pyproject.toml").exists()


def test_an_sdist_without_llama_cpp_is_refused(tmp_path: Path) -> None:
    archive = sdist(tmp_path / "x.tar.gz", {"pkg-1/setup.py": ""})
    with pytest.raises(LlamaBuildError, match=r"holds no vendor/llama.cpp"):
        extract_vendored(archive, tmp_path / "src")


def test_missing_cmake_is_a_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(LlamaBuildError, match=r"cmake is not installed.*FEDAI_LLAMA_SERVER"):
        ensure_llama_server("1.0.0")
    assert not binary_path("1.0.0").exists()


def test_missing_compiler_is_a_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/cmake" if name == "cmake" else None)
    with pytest.raises(LlamaBuildError, match="no C\\+\\+ compiler found"):
        ensure_llama_server("1.0.0")


def test_a_failing_build_reports_the_tail_of_the_cmake_log(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_source(version: str, work: Path, *, progress: object) -> Path:
        source = work / "llama.cpp"
        source.mkdir()
        (source / "CMakeLists.txt").write_text(
            'cmake_minimum_required(VERSION 3.14)\nproject(broken NONE)\nmessage(FATAL_ERROR "no such option here")\n'
        )
        return source

    monkeypatch.setattr(build, "fetch_source", broken_source)
    said: list[str] = []
    with pytest.raises(LlamaBuildError) as caught:
        ensure_llama_server("1.2.3", progress=said.append)
    message = str(caught.value)
    assert "cmake configure failed" in message and "no such option here" in message
    assert str(binary_path("1.2.3").parent / "build.log") in message
    assert not binary_path("1.2.3").exists()
    assert not list((cache / "llama-server").glob(".build-*")), "the scratch directory is removed"
    assert any("configuring" in line for line in said)


def test_an_interrupted_build_stops_every_process_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo '[ 10%] Building CXX object a.o'; wait"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt(line)

    with (tmp_path / "build.log").open("w") as log, pytest.raises(KeyboardInterrupt, match="10%"):
        build._run(["sh", "-c", script], log, tmp_path / "build.log", "cmake build", progress=interrupt)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild), "make's compilers are stopped with cmake"


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_stale_scratch_directories_are_removed_under_the_lock(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = cache / "llama-server" / ".build-2.0.0-abc"
    (stale / "src").mkdir(parents=True)
    other = cache / "llama-server" / ".build-3.0.0-abc"
    other.mkdir()
    monkeypatch.setattr(build, "build_into", lambda version, target, *, progress: fake_binary(target))
    ensure_llama_server("2.0.0")
    assert not stale.exists() and other.exists(), "only this version's leftovers"
