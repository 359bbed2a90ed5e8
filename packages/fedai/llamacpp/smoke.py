"""The smoke test of a llama-server binary on the model it will serve, and the stamps that remember a pass.

A binary compiled for instructions this CPU lacks (AVX-512, AMX: a `-march=native` build from another
machine) dies with SIGILL, often not at start but once a quantized model's kernels run (Q4_1 weights on
SmolLM2), while a small F32 model still works. So the test starts the binary on the very model it will
serve, waits for `/health`, asks for a few tokens and stops it: a few seconds. A pass is stamped per
(binary, model, CPU fingerprint) in `<binary dir>/smoke/`, so it runs once per CPU, not on every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedai.llamacpp.server import LlamaServer, LlamaServerError, describe_exit, died_of_sigill, tail

SMOKE_TOKENS = 4
SMOKE_PROMPT = "Hello"
SMOKE_SLOT_CONTEXT = 512
SMOKE_READY_TIMEOUT_S = 120.0  # loading SmolLM2 takes ~1 s; a busy 2-core machine is slower
SMOKE_REQUEST_TIMEOUT_S = 60.0
EXIT_WAIT_S = 2.0  # after a failed request: time for a dying process to finish dying
STAMPS = "smoke"


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke test saw: a pass, or why not (`detail` ends with the server log's tail)."""

    ok: bool
    returncode: int | None = None
    detail: str = ""

    @property
    def sigill(self) -> bool:
        return died_of_sigill(self.returncode)


def smoke_test(
    binary: Path,
    model: Path,
    *,
    ready_timeout: float = SMOKE_READY_TIMEOUT_S,
    request_timeout: float = SMOKE_REQUEST_TIMEOUT_S,
) -> SmokeResult:
    """Start `binary` on `model` (one slot, loopback), ask `/completion` for a few tokens, stop it."""
    fd, name = tempfile.mkstemp(prefix="llama-server-smoke-", suffix=".log")
    os.close(fd)
    log = Path(name)
    server = LlamaServer(
        model, binary=binary, slot_context=SMOKE_SLOT_CONTEXT, ready_timeout=ready_timeout, log_path=log
    )
    try:
        try:
            server.start()
        except LlamaServerError as exc:
            return SmokeResult(False, exc.returncode, str(exc))
        body = {"prompt": SMOKE_PROMPT, "n_predict": SMOKE_TOKENS}
        try:
            response = httpx.post(f"{server.url}/completion", json=body, timeout=request_timeout)
            answered = response.status_code == 200 and "content" in response.json()
            why = f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
            answered, why = False, type(exc).__name__
        if answered:
            log.unlink(missing_ok=True)
            return SmokeResult(True)
        returncode = server.exit_status(wait=EXIT_WAIT_S)
        how = describe_exit(returncode) if returncode is not None else "did not answer"
        return SmokeResult(False, returncode, f"llama-server {how} on /completion ({why}); log {log}:\n{tail(log)}")
    finally:
        server.stop()


def stamp_path(binary: Path, model: Path, fingerprint: str) -> Path:
    """The stamp of a pass of this binary (size, mtime) on this model (path, size, mtime) on this CPU."""
    made, resolved = binary.stat(), model.resolve()
    weights = resolved.stat()
    identity = {
        "binary": [made.st_size, made.st_mtime_ns],
        "model": [str(resolved), weights.st_size, weights.st_mtime_ns],
        "cpu": fingerprint,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return binary.parent / STAMPS / f"{key}.ok"


def stamped(binary: Path, model: Path, fingerprint: str) -> bool:
    """This binary has passed the smoke test on this model on this CPU (False if either file is missing)."""
    try:
        return stamp_path(binary, model, fingerprint).is_file()
    except OSError:
        return False


def write_stamp(binary: Path, model: Path, fingerprint: str, *, cpu: str) -> Path:
    """Record a pass (atomically; the content is for people, only the name is checked)."""
    path = stamp_path(binary, model, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "binary": str(binary),
        "model": str(model.resolve()),
        "cpu_fingerprint": fingerprint,
        "cpu": cpu,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fd, name = tempfile.mkstemp(prefix=".stamp.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    os.chmod(name, 0o644)  # readable like the binary beside it (mkstemp makes it 0600)
    os.replace(name, path)
    return path


def clear_stamps(directory: Path) -> None:
    """Forget every pass recorded in `directory` (its binary is being replaced)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory / STAMPS)
