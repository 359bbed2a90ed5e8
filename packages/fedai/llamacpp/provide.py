"""`ensure_llama_server`: a `llama-server` that runs on this CPU, checked on the model it will serve.

1. `$FEDAI_LLAMA_SERVER` (an operator's own binary) is used as is: no build, no smoke test.
2. The flavor asked for: portable (default), or native for this CPU's fingerprint (`FEDAI_LLAMA_NATIVE=1`,
   `native=True`). A cached binary with a stamp for (binary, model, CPU) is returned at once.
3. Otherwise, under the version's lock: a cached binary is smoke-tested (and stamped when it passes); a
   missing one is built in scratch and smoke-tested *before* it is installed.
4. A binary that dies with SIGILL is never used: a cached one is replaced by a portable build, with a one-line
   message; a native one is marked as dying on this CPU so later calls go to the portable build; a portable
   one that is freshly built and still dies raises `LlamaBuildError`. At most one build per flavor per call.

The unkeyed `<version>/llama-server` of fedai before CPU keying (a `-march=native` build of unknown origin)
is never used; it is named in a message when a portable build replaces it, and left in place for that fedai.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fedai.llamacpp.build import (
    BINARY_ENV,
    DEFAULT_VERSION,
    Flavor,
    LlamaBuildError,
    binary_path,
    compile_llama_server,
    executable,
    legacy_binary_path,
    native_requested,
    remove_stale_scratch,
    version_lock,
    versions_dir,
)
from fedai.llamacpp.cache import Progress, install_file, no_progress, scratch_dir
from fedai.llamacpp.cpu import cpu_fingerprint, cpu_name
from fedai.llamacpp.models import ensure_model
from fedai.llamacpp.smoke import SmokeResult, clear_stamps, smoke_test, stamped, write_stamp
from fedai.service.filelock import file_lock

SIGILL_MARKER = "died-with-sigill"  # in a native build's directory: that build cannot run on this CPU
SIGILL = "SIGILL (illegal instruction)"


@dataclass(frozen=True)
class Request:
    """One `ensure_llama_server` call: which version, for which model, on which CPU, telling whom."""

    version: str
    model: Path
    fingerprint: str
    say: Progress


class _DiesHere(Exception):
    """A native build dies with SIGILL on this CPU (and is marked so): the portable build is used instead."""


def ensure_llama_server(
    version: str = DEFAULT_VERSION,
    *,
    model: Path | None = None,
    native: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """The path of a `llama-server` that served `model` (default: the tiny test model) on this CPU.

    `native` None reads `FEDAI_LLAMA_NATIVE`. Two processes never build at once: the second waits on the lock
    and then uses the first one's binary. Raises `LlamaBuildError` when no working binary can be provided.
    """
    say = progress or no_progress
    explicit = os.environ.get(BINARY_ENV, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not executable(path):
            raise LlamaBuildError(f"{BINARY_ENV}={explicit} is not an executable file")
        return path
    want_native = native_requested() if native is None else native
    served = model if model is not None else ensure_model("tiny", progress=say)
    if not served.is_file():
        raise LlamaBuildError(f"no model file at {served}: cannot check llama-server on it")
    request = Request(version, served, cpu_fingerprint(), say)
    native_flavor = Flavor.native_for(request.fingerprint)
    use_native = want_native and not _dies_here(request, native_flavor)
    quick = binary_path(version, native_flavor if use_native else Flavor.portable())
    if stamped(quick, served, request.fingerprint):  # the fast path: no lock, no process
        return quick
    with file_lock(version_lock(version), progress=say, what=f"preparing llama-server {version}"):
        if use_native:
            try:
                return _provide(request, native_flavor)
            except _DiesHere:
                pass
        return _provide(request, Flavor.portable())


def _dies_here(request: Request, flavor: Flavor) -> bool:
    """A native build of this CPU is marked as dying with SIGILL here (and the caller is told)."""
    marker = binary_path(request.version, flavor).parent / SIGILL_MARKER
    if not marker.is_file():
        return False
    request.say(f"a native llama-server died with {SIGILL} on this CPU ({marker}); using a portable binary")
    return True


def _provide(request: Request, flavor: Flavor) -> Path:
    """The binary of `flavor`, cached or built, smoke-tested on this CPU (lock held)."""
    target = binary_path(request.version, flavor)
    if stamped(target, request.model, request.fingerprint):  # done by the process we waited for
        return target
    if executable(target):
        result = smoke_test(target, request.model)
        if result.ok:
            write_stamp(target, request.model, request.fingerprint, cpu=cpu_name())
            return target
        if not result.sigill:
            raise LlamaBuildError(
                f"the cached llama-server {target} fails on {request.model.name}: {result.detail}\n"
                f"(delete {target.parent} to rebuild it)"
            )
        _discard(target)
        if flavor.native:
            _mark_sigill(target, result)
            request.say(f"cached native llama-server died with {SIGILL} on this CPU; using a portable binary")
            raise _DiesHere
        request.say(f"cached llama-server died with {SIGILL} on this CPU; rebuilding a portable binary")
    else:
        legacy = legacy_binary_path(request.version)
        if not flavor.native and executable(legacy):
            request.say(
                f"ignoring {legacy}: an older fedai built it with -march=native and no CPU key, so it may not run "
                "on this CPU; building a portable binary"
            )
    return _build(request, flavor)


def _build(request: Request, flavor: Flavor) -> Path:
    """Build `flavor`, smoke-test it on the model, install it only if it passes (lock held)."""
    target = binary_path(request.version, flavor)
    kind = "native" if flavor.native else "portable"
    say = request.say
    remove_stale_scratch(versions_dir(), request.version)
    started = time.monotonic()
    say(f"building a {kind} llama-server {request.version} (once; cached in {target.parent})")
    with scratch_dir(versions_dir(), f".build-{request.version}-") as work:
        log_path = target.parent / "build.log"
        built = compile_llama_server(request.version, work, log_path, native=flavor.native, progress=say)
        say(f"compiled in {time.monotonic() - started:.0f} s; smoke-testing it on {request.model.name}")
        result = smoke_test(built, request.model)
        if result.ok:
            clear_stamps(target.parent)
            install_file(built, target, mode=0o755)
            write_stamp(target, request.model, request.fingerprint, cpu=cpu_name())
            say(f"built llama-server {request.version} ({kind}) in {time.monotonic() - started:.0f} s: {target}")
            return target
    if result.sigill and flavor.native:
        _mark_sigill(target, result)
        say(f"the native llama-server just built died with {SIGILL} on this CPU; building a portable binary")
        raise _DiesHere
    what = f"died with {SIGILL} on this CPU" if result.sigill else "failed its smoke test"
    raise LlamaBuildError(
        f"the freshly built {kind} llama-server {what} on {request.model.name} and was not cached: {result.detail}"
    )


def _discard(target: Path) -> None:
    """Remove a binary that dies here, with its stamps (lock held; running copies keep their inode)."""
    target.unlink(missing_ok=True)
    clear_stamps(target.parent)


def _mark_sigill(target: Path, result: SmokeResult) -> None:
    """Remember that this native build dies on this CPU, so later calls go straight to the portable build."""
    target.parent.mkdir(parents=True, exist_ok=True)
    first_line = result.detail.splitlines()[0] if result.detail else ""
    (target.parent / SIGILL_MARKER).write_text(f"{cpu_name()}: {first_line}\n")
