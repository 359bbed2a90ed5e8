"""Build llama.cpp's `llama-server` once per version, from the source vendored in PyPI's llama-cpp-python sdist.

Only PyPI is needed: `pip download --no-binary :all: llama-cpp-python==VERSION` fetches the sdist, whose
`vendor/llama.cpp` is configured for the CPU only (no CUDA/Metal/Vulkan/BLAS, no OpenSSL, no web-UI
download) and statically linked. The binary is cached under `<cache>/llama-server/<version>/llama-server`;
`FEDAI_LLAMA_SERVER=/path/to/llama-server` uses an existing binary instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from fedai.llamacpp.cache import (
    Progress,
    cache_root,
    file_lock,
    install_file,
    lock_path,
    no_progress,
    scratch_dir,
)

DEFAULT_VERSION = "0.3.36"
BINARY_ENV = "FEDAI_LLAMA_SERVER"
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

_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")  # make: "[ 42%] Building CXX object …"
_STEPS = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja: "[12/180] Building CXX object …"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")


class LlamaBuildError(RuntimeError):
    """`llama-server` cannot be provided: a tool is missing, the download or the build failed."""


def binary_path(version: str = DEFAULT_VERSION, root: Path | None = None) -> Path:
    """Where the cached binary for `version` lives (it may not exist yet)."""
    _check_version(version)
    return (root or cache_root()) / "llama-server" / version / TARGET


def _check_version(version: str) -> None:
    if not _VERSION.match(version):
        raise LlamaBuildError(f"not a version: {version!r}")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def ensure_llama_server(version: str = DEFAULT_VERSION, *, progress: Progress | None = None) -> Path:
    """The path of a working `llama-server`: `$FEDAI_LLAMA_SERVER`, the cached build, or a fresh build.

    Two processes never build at once: the second waits on the lock and then uses the first one's binary.
    """
    say = progress or no_progress
    explicit = os.environ.get(BINARY_ENV, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not _executable(path):
            raise LlamaBuildError(f"{BINARY_ENV}={explicit} is not an executable file")
        return path
    target = binary_path(version)
    if _executable(target):
        return target
    with file_lock(lock_path(target.parent), progress=say, what=f"building llama-server {version}"):
        if _executable(target):  # built by the process we waited for
            return target
        remove_stale_scratch(target.parent.parent, version)
        started = time.monotonic()
        say(f"building llama-server {version} (once; cached in {target.parent})")
        build_into(version, target, progress=say)
        say(f"built llama-server {version} in {time.monotonic() - started:.0f} s: {target}")
    return target


def remove_stale_scratch(directory: Path, version: str) -> None:
    """Scratch directories of builds whose process died without cleaning up (we hold the lock: none is live)."""
    if directory.is_dir():
        for stale in directory.glob(f".build-{version}-*"):
            shutil.rmtree(stale, ignore_errors=True)


def build_into(version: str, target: Path, *, progress: Progress = no_progress) -> None:
    """Download, configure and build; install the binary atomically at `target` (lock held by the caller)."""
    cmake, generator = _toolchain()
    log_path = target.parent / "build.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(target.parent.parent, f".build-{version}-") as work:
        source = fetch_source(version, work, progress=progress)
        build_dir = work / "build"
        jobs = cpu_count()
        with log_path.open("w") as log:
            progress("configuring llama.cpp (cmake)")
            _run(configure_command(cmake, generator, source, build_dir), log, log_path, "cmake configure")
            progress(f"compiling {TARGET} with {jobs} job(s)")
            _run(build_command(cmake, build_dir, jobs), log, log_path, "cmake build", progress=progress)
        built = build_dir / "bin" / TARGET
        if not _executable(built):
            raise LlamaBuildError(f"the build finished but {built} is missing\n{_tail(log_path)}")
        install_file(built, target, mode=0o755)


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


def configure_command(cmake: str, generator: str, source: Path, build_dir: Path) -> list[str]:
    """`cmake -S … -B … -G …` with the CPU-only, static, offline options."""
    return [cmake, "-S", str(source), "-B", str(build_dir), "-G", generator,
            *(f"-D{name}={value}" for name, value in CMAKE_OPTIONS.items())]  # fmt: skip


def build_command(cmake: str, build_dir: Path, jobs: int) -> list[str]:
    """`cmake --build` for the one target, with `jobs` parallel jobs."""
    return [cmake, "--build", str(build_dir), "--target", TARGET, "--config", "Release", "-j", str(jobs)]


def fetch_source(version: str, work: Path, *, progress: Progress = no_progress) -> Path:
    """Download the llama-cpp-python sdist with pip and extract only `vendor/llama.cpp`; returns that directory."""
    download = work / "sdist"
    progress(f"downloading the {SDIST_PACKAGE}=={version} sdist from PyPI (~76 MB)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", f"{SDIST_PACKAGE}=={version}", "-d", str(download)]  # fmt: skip
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
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, process_group=0)  # fmt: skip
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
        raise LlamaBuildError(f"{what} failed (exit {process.returncode}); full log: {log_path}\n{_tail(log_path)}")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
