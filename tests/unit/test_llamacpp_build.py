"""Building llama-server: cache keys per flavor, the cmake command lines, progress parsing and clear errors.

The real build is exercised by the session fixtures (tests/support/llama.py); here its steps are replaced
where they would take minutes. What is built when, and the smoke test: test_llamacpp_provide.py.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from fedai.llamacpp import build
from fedai.llamacpp.build import (
    CMAKE_OPTIONS,
    X86_PORTABLE_OPTIONS,
    Flavor,
    LlamaBuildError,
    binary_path,
    build_command,
    build_percent,
    compile_llama_server,
    configure_command,
    extract_vendored,
    legacy_binary_path,
    native_requested,
    version_lock,
)
from fedai.llamacpp.provide import ensure_llama_server


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDAI_LLAMA_SERVER", raising=False)
    return tmp_path / "cache"


def test_portable_and_native_builds_have_their_own_directories(cache: Path) -> None:
    version_dir = cache / "llama-server" / "0.3.36"
    assert binary_path("0.3.36", Flavor.portable("x86_64")) == version_dir / "portable-x86_64" / "llama-server"
    native = version_dir / "native-cd52b58380636" / "llama-server"
    assert binary_path("0.3.36", Flavor.native_for("cd52b58380636")) == native
    assert binary_path("0.3.36", Flavor.native_for("aaaa")) != binary_path("0.3.36", Flavor.native_for("bbbb"))
    assert binary_path("0.3.37", Flavor.portable()) != binary_path("0.3.36", Flavor.portable())
    assert legacy_binary_path("0.3.36") == version_dir / "llama-server", "the unkeyed path of older fedai"
    assert version_lock("0.3.36") == cache / "llama-server" / "0.3.36.lock", "the lock older fedai takes too"
    with pytest.raises(LlamaBuildError, match="not a version"):
        binary_path("../../etc", Flavor.portable())
    with pytest.raises(LlamaBuildError, match="not a CPU fingerprint"):
        Flavor.native_for("../x")


@pytest.mark.parametrize(
    ("value", "native"), [("", False), ("0", False), ("off", False), ("1", True), ("TRUE", True), (" yes ", True)]
)
def test_fedai_llama_native_opts_in(value: str, native: bool) -> None:
    assert native_requested({"FEDAI_LLAMA_NATIVE": value}) is native
    assert native_requested({}) is False


def test_fedai_llama_native_refuses_other_values() -> None:
    with pytest.raises(LlamaBuildError, match="FEDAI_LLAMA_NATIVE must be 1 or 0"):
        native_requested({"FEDAI_LLAMA_NATIVE": "native"})


def test_configure_is_portable_by_default() -> None:
    argv = configure_command("cmake", "Ninja", Path("/src"), Path("/b"), machine="x86_64")
    assert "-DGGML_NATIVE=OFF" in argv and "-DGGML_NATIVE=ON" not in argv
    for option in ("GGML_AVX2=ON", "GGML_FMA=ON", "GGML_F16C=ON", "GGML_AVX512=OFF", "GGML_AMX_INT8=OFF"):
        assert f"-D{option}" in argv, "the x86_64 baseline is pinned, AVX-512 and AMX off"
    arm = configure_command("cmake", "Ninja", Path("/src"), Path("/b"), machine="aarch64")
    assert "-DGGML_NATIVE=OFF" in arm and not any("GGML_AVX" in item for item in arm), "no x86 options on ARM"


def test_configure_is_native_only_when_asked() -> None:
    argv = configure_command("cmake", "Ninja", Path("/src"), Path("/b"), native=True, machine="x86_64")
    assert "-DGGML_NATIVE=ON" in argv and "-DGGML_NATIVE=OFF" not in argv
    assert not any(item.startswith(f"-D{name}=") for item in argv for name in X86_PORTABLE_OPTIONS), (
        "-march=native decides the instruction set"
    )


def test_configure_turns_off_gpus_network_and_shared_libs() -> None:
    argv = configure_command("cmake", "Ninja", Path("/src"), Path("/b"), machine="riscv64")
    assert argv[:7] == ["cmake", "-S", "/src", "-B", "/b", "-G", "Ninja"]
    for option in (
        "GGML_CUDA=OFF",
        "GGML_METAL=OFF",
        "GGML_VULKAN=OFF",
        "GGML_BLAS=OFF",
        "BUILD_SHARED_LIBS=OFF",
        "LLAMA_CURL=OFF",
        "LLAMA_OPENSSL=OFF",
        "LLAMA_USE_PREBUILT_UI=OFF",
        "CMAKE_BUILD_TYPE=Release",
    ):
        assert f"-D{option}" in argv
    assert len(argv) == 7 + len(CMAKE_OPTIONS) + 1, "plus GGML_NATIVE (no x86 options on this machine)"


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
    archive = sdist(
        tmp_path / "x.tar.gz",
        {
            "llama_cpp_python-0.3.36/pyproject.toml": "",
            "llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": "project(x)",
            "llama_cpp_python-0.3.36/vendor/llama.cpp/src/a.cpp": "int a;",
        },
    )
    source = extract_vendored(archive, tmp_path / "src")
    assert source == tmp_path / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    assert (source / "src" / "a.cpp").read_text() == "int a;"
    assert not (tmp_path / "src" / "llama_cpp_python-0.3.36" / "pyproject.toml").exists()


def test_an_sdist_without_llama_cpp_is_refused(tmp_path: Path) -> None:
    archive = sdist(tmp_path / "x.tar.gz", {"pkg-1/setup.py": ""})
    with pytest.raises(LlamaBuildError, match=r"holds no vendor/llama.cpp"):
        extract_vendored(archive, tmp_path / "src")


def test_missing_cmake_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(LlamaBuildError, match=r"cmake is not installed.*FEDAI_LLAMA_SERVER"):
        compile_llama_server("1.0.0", tmp_path, tmp_path / "build.log")


def test_missing_compiler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/cmake" if name == "cmake" else None)
    with pytest.raises(LlamaBuildError, match="no C\\+\\+ compiler found"):
        compile_llama_server("1.0.0", tmp_path, tmp_path / "build.log")


def test_a_failing_build_reports_the_tail_of_the_cmake_log(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_source(version: str, work: Path, *, progress: object) -> Path:
        source = work / "llama.cpp"
        source.mkdir()
        (source / "CMakeLists.txt").write_text(
            'cmake_minimum_required(VERSION 3.14)\nproject(broken NONE)\nmessage(FATAL_ERROR "no such option here")\n'
        )
        return source

    monkeypatch.setattr(build, "fetch_source", broken_source)
    model = cache / "m.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    said: list[str] = []
    with pytest.raises(LlamaBuildError) as caught:
        ensure_llama_server("1.2.3", model=model, progress=said.append)
    message = str(caught.value)
    assert "cmake configure failed" in message and "no such option here" in message
    assert str(binary_path("1.2.3", Flavor.portable()).parent / "build.log") in message
    assert not binary_path("1.2.3", Flavor.portable()).exists()
    assert not list((cache / "llama-server").glob(".build-*")), "the scratch directory is removed"
    assert any("configuring llama.cpp (cmake, portable)" in line for line in said)


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
