"""Run `llama-server` on loopback for tests, the demo and `fedai llama serve`.

`llama-server` answers `/health` with 503 while it loads the model and 200 once it can serve. Its context
(`-c`) is split across its parallel slots, so this module takes a context per slot and multiplies. It runs
with one thread by default (`-t 1`: on 2-core machines more threads made generation erratic,
docs/decisions.md#llama-cpp).
The process never outlives its owner: `stop()` (also at interpreter exit) and, on Linux, a parent-death
signal. Start it from a long-lived thread: Linux sends that signal when the *thread* that forked it ends.
A death is reported with how it died: SIGILL (a binary built for another CPU) is named as such.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from fedai.service.children import DIE_WITH_PARENT

HOST = "127.0.0.1"
DEFAULT_SLOT_CONTEXT = 2048
# `fedai llama serve`'s slots: a node's default NODE_CAPACITY_MAX, so one node in front of it admits no more
# requests than the server runs at once (and status shows slots that exist)
DEFAULT_PARALLEL = 4
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 20


class LlamaServerError(RuntimeError):
    """llama-server exited or did not become healthy in time; the message ends with its log's tail.

    `returncode` is the process's exit status when it died (negative: killed by that signal), else None.
    """

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode

    @property
    def sigill(self) -> bool:
        """It died of an illegal instruction: a binary built for a CPU with instructions this one lacks."""
        return died_of_sigill(self.returncode)


def died_of_sigill(returncode: int | None) -> bool:
    """Killed by SIGILL (-4 from subprocess), or a shell's report of it (128 + 4 = 132)."""
    return returncode in (-signal.SIGILL, 128 + signal.SIGILL)


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: "killed by SIGILL (illegal instruction)", "exited with status 1"."""
    if returncode is None:
        return "still running"
    if died_of_sigill(returncode):
        how = "killed by" if returncode < 0 else f"exited with status {returncode}:"
        return f"{how} SIGILL (illegal instruction)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_args(
    binary: Path | str,
    model: Path | str,
    *,
    host: str = HOST,
    port: int,
    threads: int = 1,
    parallel: int = 1,
    slot_context: int = DEFAULT_SLOT_CONTEXT,
    model_id: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that serves `model`: `-c` is `slot_context × parallel` because llama-server splits it."""
    if parallel < 1 or threads < 1 or slot_context < 1:
        raise ValueError("parallel, threads and slot_context must be positive")
    argv = [str(binary), "-m", str(model), "--host", host, "--port", str(port), "-t", str(threads)]
    argv += ["-c", str(slot_context * parallel), "--parallel", str(parallel)]
    if model_id:
        argv += ["--alias", model_id]
    return argv + list(extra)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (or why it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 32 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:]) or "(log is empty)"


def wait_healthy(
    url: str, *, timeout: float, alive: Callable[[], bool] = lambda: True, statuses: list[int] | None = None
) -> None:
    """Poll `url/health` until it answers 200; raise `TimeoutError` or `ProcessLookupError` (when not `alive()`).

    Every HTTP status seen is appended to `statuses` (503s while loading, then one 200).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as http:
        while True:
            if not alive():
                raise ProcessLookupError(f"llama-server exited before it was healthy ({last})")
            try:
                response = http.get(f"{url}/health")
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if statuses is not None and (not statuses or statuses[-1] != response.status_code):
                    statuses.append(response.status_code)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server not healthy within {timeout:.0f} s ({last})")
            time.sleep(0.02)


@dataclass
class LlamaServer:
    """One `llama-server` process serving one model on loopback; a context manager too.

    `binary` comes from the caller, usually `ensure_llama_server(model=model)` (built and smoke-tested on the
    model once if needed); `port` defaults to a free one, `log_path` to a temporary file kept for diagnosis.
    """

    model: Path
    model_id: str | None = None
    binary: Path = field(kw_only=True)
    host: str = HOST
    port: int | None = None
    threads: int = 1
    parallel: int = 1
    slot_context: int = DEFAULT_SLOT_CONTEXT
    log_path: Path | None = None
    extra_args: Sequence[str] = ()
    ready_timeout: float = 120.0
    health_statuses: list[int] = field(default_factory=list, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (native API at /completion, OpenAI API under /v1)."""
        if self.port is None:
            raise LlamaServerError("llama-server has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def argv(self) -> list[str]:
        """The command line `start()` runs (port resolved)."""
        if self.port is None:
            self.port = free_port(self.host)
        return server_args(
            self.binary,
            self.model,
            host=self.host,
            port=self.port,
            threads=self.threads,
            parallel=self.parallel,
            slot_context=self.slot_context,
            model_id=self.model_id,
            extra=self.extra_args,
        )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The process's exit status once it has ended (waiting up to `wait` seconds), else None."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=wait) if wait > 0 else self._process.poll()
        except subprocess.TimeoutExpired:
            return None

    def start(self) -> Self:
        """Start the process and wait until `/health` answers 200; `LlamaServerError` with the log's tail if not."""
        if self._process is not None:
            raise LlamaServerError("llama-server already started")
        argv = self.argv()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                preexec_fn=DIE_WITH_PARENT,  # only calls prctl(2): safe after fork
            )
        atexit.register(self.stop)
        try:
            wait_healthy(self.url, timeout=self.ready_timeout, alive=self.running, statuses=self.health_statuses)
        except (TimeoutError, ProcessLookupError) as exc:
            returncode = self.exit_status()  # read before stop(): None if it was alive (a timeout)
            self.stop()
            how = f" ({describe_exit(returncode)})" if returncode is not None else ""
            raise LlamaServerError(f"{exc}{how}; log {self.log_path}:\n{tail(self.log_path)}", returncode) from None
        return self

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, up to `grace` seconds, then SIGKILL. Idempotent."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
