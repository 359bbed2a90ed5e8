"""Build llama.cpp's `llama-server` from the source vendored in PyPI's llama-cpp-python sdist.

Only PyPI is needed: `pip download --no-binary :all: llama-cpp-python==VERSION` fetches the sdist, whose
`vendor/llama.cpp` is configured for the CPU only (no CUDA/Metal/Vulkan/BLAS, no OpenSSL, no web-UI
download) and statically linked. Builds are portable by default (`GGML_NATIVE=OFF`; on x86_64 the AVX2
baseline, pinned); `FEDAI_LLAMA_NATIVE=1` asks for `-march=native`. Each flavor has its own cache directory,
`<cache>/llama-server/<version>/<flavor.key>/`: `portable-<machine>` or `native-<CPU fingerprint>`.
`fedai.llamacpp.provide` decides what to build and checks it before it is cached.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fedai.llamacpp.cache import Progress, cache_root, no_progress

DEFAULT_VERSION = "0.3.36"
BINARY_ENV = "FEDAI_LLAMA_SERVER"
NATIVE_ENV = "FEDAI_LLAMA_NATIVE"
SDIST_PACKAGE = "llama-cpp-python"
TARGET = "llama-server"
LOG_TAIL_LINES = 30

CMAKE_OPTIONS: dict[str, str] = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "OFF",
    "GGML_CUDA": "OFF",
    "GGML_METAL": "OFF",
    "GGML_VULKAN": "OFF",
    "GGML_BLAS": "OFF",
    "GGML_CCACHE": "OFF",
    "LLAMA_CURL": "OFF",  # deprecated (ignored) in recent llama.cpp; kept for older vendored versions
    "LLAMA_OPENSSL": "OFF",
    "LLAMA_BUILD_UI": "OFF",
    "LLAMA_USE_PREBUILT_UI": "OFF",  # otherwise the build downloads the web UI from Hugging Face
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_APP": "OFF",
}
# A portable x86_64 build: what ggml's CMakeLists.txt enables by itself with GGML_NATIVE=OFF (SSE4.2, AVX,
# AVX2, BMI2, FMA, F16C: any x86_64 CPU since Haswell / Zen), pinned because ggml turns them off too when
# SOURCE_DATE_EPOCH is set; AVX-512, AVX-VNNI and AMX stay off (they are what differs between servers).
X86_PORTABLE_OPTIONS: dict[str, str] = {
    **dict.fromkeys(("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_BMI2", "GGML_FMA", "GGML_F16C"), "ON"),
    **dict.fromkeys(
        (
            "GGML_AVX_VNNI",
            "GGML_AVX512",
            "GGML_AVX512_VBMI",
            "GGML_AVX512_VNNI",
            "GGML_AVX512_BF16",
            "GGML_AMX_TILE",
            "GGML_AMX_INT8",
            "GGML_AMX_BF16",
        ),
        "OFF",
    ),
}
X86_MACHINES = frozenset({"x86_64", "amd64"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")  # make: "[ 42%] Building CXX object …"
_STEPS = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja: "[12/180] Building CXX object …"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]*\Z")
_UNSAFE = re.compile(r"[^0-9A-Za-z_.-]")


class LlamaBuildError(RuntimeError):
    """`llama-server` cannot be provided: a tool is missing, the download or the build failed, or it does not run."""


@dataclass(frozen=True)
class Flavor:
    """What a build is: portable (`GGML_NATIVE=OFF`), or native for one CPU; `key` names its cache directory."""

    native: bool
    key: str

    @classmethod
    def portable(cls, machine: str | None = None) -> Flavor:
        return cls(False, f"portable-{_UNSAFE.sub('_', machine or platform.machine()) or 'unknown'}")

    @classmethod
    def native_for(cls, fingerprint: str) -> Flavor:
        if not fingerprint or _UNSAFE.search(fingerprint):
            raise LlamaBuildError(f"not a CPU fingerprint: {fingerprint!r}")
        return cls(True, f"native-{fingerprint}")


def native_requested(environ: Mapping[str, str] | None = None) -> bool:
    """`FEDAI_LLAMA_NATIVE`: 1/true/yes/on asks for a `-march=native` build; unset, 0/false/no/off: portable."""
    value = (os.environ if environ is None else environ).get(NATIVE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LlamaBuildError(f"{NATIVE_ENV} must be 1 or 0 (true/false, yes/no, on/off), not {value!r}")


def versions_dir(root: Path | None = None) -> Path:
    """`<cache>/llama-server`: one directory per version, and its lock beside it."""
    return (root or cache_root()) / "llama-server"


def build_dir(version: str, flavor: Flavor, root: Path | None = None) -> Path:
    """`<cache>/llama-server/<version>/<flavor.key>`: the binary, its build.log and its smoke-test stamps."""
    _check_version(version)
    return versions_dir(root) / version / flavor.key


def binary_path(version: str, flavor: Flavor, root: Path | None = None) -> Path:
    """Where the cached binary of this version and flavor lives (it may not exist yet)."""
    return build_dir(version, flavor, root) / TARGET


def legacy_binary_path(version: str, root: Path | None = None) -> Path:
    """Where fedai before CPU keying cached an unkeyed `-march=native` binary: never used, only reported."""
    _check_version(version)
    return versions_dir(root) / version / TARGET


def version_lock(version: str, root: Path | None = None) -> Path:
    """The lock held while any flavor of `version` is checked or built (the one older fedai took too)."""
    _check_version(version)
    return versions_dir(root) / f"{version}.lock"


def _check_version(version: str) -> None:
    if not _VERSION.match(version):
        raise LlamaBuildError(f"not a version: {version!r}")


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def remove_stale_scratch(directory: Path, version: str) -> None:
    """Scratch directories of builds whose process died without cleaning up (we hold the lock: none is live)."""
    if directory.is_dir():
        for stale in directory.glob(f".build-{version}-*"):
            shutil.rmtree(stale, ignore_errors=True)


def compile_llama_server(
    version: str, work: Path, log_path: Path, *, native: bool = False, progress: Progress = no_progress
) -> Path:
    """Download, configure and build in the scratch directory `work`; returns the built binary (not installed)."""
    cmake, generator = _toolchain()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    source = fetch_source(version, work, progress=progress)
    build_root = work / "build"
    jobs = cpu_count()
    with log_path.open("w") as log:
        progress(f"configuring llama.cpp (cmake, {'GGML_NATIVE=ON: this CPU only' if native else 'portable'})")
        _run(configure_command(cmake, generator, source, build_root, native=native), log, log_path, "cmake configure")
        progress(f"compiling {TARGET} with {jobs} job(s)")
        _run(build_command(cmake, build_root, jobs), log, log_path, "cmake build", progress=progress)
    built = build_root / "bin" / TARGET
    if not executable(built):
        raise LlamaBuildError(f"the build finished but {built} is missing\n{tail_of(log_path)}")
    return built


def _toolchain() -> tuple[str, str]:
    """cmake and a generator whose tool exists; a clear error when cmake or a C++ compiler is missing."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise LlamaBuildError(
            "cmake is not installed: install cmake and a C/C++ compiler (e.g. `apt-get install cmake g++`), "
            f"or set {BINARY_ENV} to an existing llama-server"
        )
    compiler = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None or shutil.which(compiler) is None:
        raise LlamaBuildError(
            "no C++ compiler found (c++, g++ or clang++, or $CXX): install one (e.g. `apt-get install g++`), "
            f"or set {BINARY_ENV} to an existing llama-server"
        )
    if shutil.which("ninja"):
        return cmake, "Ninja"
    if shutil.which("make"):
        return cmake, "Unix Makefiles"
    raise LlamaBuildError("neither ninja nor make is installed: install one of them (e.g. `apt-get install make`)")


def cpu_count() -> int:
    """CPUs this process may use (the build's -j)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_command(
    cmake: str, generator: str, source: Path, build_root: Path, *, native: bool = False, machine: str | None = None
) -> list[str]:
    """`cmake -S … -B … -G …` with the CPU-only, static, offline options; portable unless `native`."""
    options = {**CMAKE_OPTIONS, "GGML_NATIVE": "ON" if native else "OFF"}
    if not native and (machine or platform.machine()).lower() in X86_MACHINES:
        options |= X86_PORTABLE_OPTIONS
    defines = [f"-D{name}={value}" for name, value in options.items()]
    return [cmake, "-S", str(source), "-B", str(build_root), "-G", generator, *defines]


def build_command(cmake: str, build_root: Path, jobs: int) -> list[str]:
    """`cmake --build` for the one target, with `jobs` parallel jobs."""
    return [cmake, "--build", str(build_root), "--target", TARGET, "--config", "Release", "-j", str(jobs)]


def fetch_source(version: str, work: Path, *, progress: Progress = no_progress) -> Path:
    """Download the llama-cpp-python sdist with pip and extract only `vendor/llama.cpp`; returns that directory."""
    download = work / "sdist"
    progress(f"downloading the {SDIST_PACKAGE}=={version} sdist from PyPI (~76 MB)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--disable-pip-version-check", f"{SDIST_PACKAGE}=={version}", "-d", str(download)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = sorted(download.glob("*.tar.gz")) if download.is_dir() else []
    if result.returncode != 0 or not archives:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise LlamaBuildError(f"pip could not download {SDIST_PACKAGE}=={version}:\n{tail}")
    progress("extracting vendor/llama.cpp")
    return extract_vendored(archives[0], work / "src")


def extract_vendored(archive: Path, into: Path) -> Path:
    """Extract `<top>/vendor/llama.cpp/**` from the sdist (with tarfile's data filter); returns its path."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if _vendored(m.name)]
        if not members:
            raise LlamaBuildError(f"{archive.name} holds no vendor/llama.cpp")
        tar.extractall(into, members=members, filter="data")
    top = members[0].name.split("/", 1)[0]
    source = into / top / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise LlamaBuildError(f"{archive.name}: vendor/llama.cpp has no CMakeLists.txt")
    return source


def _vendored(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 3 and parts[1] == "vendor" and parts[2] == "llama.cpp"


def build_percent(line: str) -> int | None:
    """The build's progress in percent from one line of make's or ninja's output, if it carries one."""
    match = _PERCENT.match(line)
    if match:
        return min(100, int(match.group(1)))
    match = _STEPS.match(line)
    if match and int(match.group(2)) > 0:
        return min(100, 100 * int(match.group(1)) // int(match.group(2)))
    return None


def _run(command: Sequence[str], log: TextIO, log_path: Path, what: str, *, progress: Progress | None = None) -> None:
    """Run `command` with its output appended to the log; report each new percentage; raise with the log's tail."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    # Its own process group, so that an interruption stops make and every compiler it started, not just cmake.
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, process_group=0
    )
    assert process.stdout is not None
    last = -1
    try:
        for line in process.stdout:
            log.write(line)
            percent = build_percent(line) if progress is not None else None
            if progress is not None and percent is not None and percent > last:
                last = percent
                progress(f"compiling {TARGET}: {percent}%")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        log.flush()
    if process.wait() != 0:
        raise LlamaBuildError(f"{what} failed (exit {process.returncode}); full log: {log_path}\n{tail_of(log_path)}")


def tail_of(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
