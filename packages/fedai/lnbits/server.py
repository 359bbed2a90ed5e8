"""Run LNbits on loopback with the FakeWallet funding source: real BOLT11 invoices and preimages, no node.

FakeWallet signs invoices with a key of its own and settles payments between wallets of the same LNbits
internally, so tests and the devnet get real invoices, real preimages and balances that move, offline.
LNbits serves `lnbits/static` by a relative path, so it runs with its working directory at its
site-packages; its SQLite data lives in the `data_dir` given (a temporary directory in tests).
It runs as one process (LNbits' app under uvicorn, as the `lnbits` command configures it, without that
command's restart supervisor), in a process group of its own, and never outlives its owner: `stop()` (also at
interpreter exit) ends the group, and on Linux a parent-death signal ends it if the owner dies first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from fedai.llamacpp.server import HOST, describe_exit, free_port, tail
from fedai.lnbits.install import LnbitsInstall, LnbitsInstallError
from fedai.service.children import DIE_WITH_PARENT

READY_TIMEOUT_S = 120.0  # ~4 s on an idle machine; a loaded 2-core CI machine is slower
STOP_GRACE_S = 10.0
# LNbits' app under uvicorn in this one process. The `lnbits` command serves from a child process (so that its
# admin UI can restart the server), which a parent-death signal would not reach: killed owners left it behind.
APP = "lnbits.__main__:app"
HEALTH = "/api/v1/health"  # 200 once set up; 307 to /first_install before: either way, serving
# The parent's settings that must not reach LNbits: its own configuration, and ours leaking into its venv.
_INHERITED_NOT = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


class LnbitsServerError(RuntimeError):
    """LNbits exited or did not answer in time; the message ends with its log's tail."""


def lnbits_env(data_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment LNbits runs with: FakeWallet, the admin UI (superuser API), data in `data_dir`."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith("LNBITS_") and key not in _INHERITED_NOT
    }
    env |= {
        "LNBITS_DATA_FOLDER": str(data_dir),
        "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
        "LNBITS_ADMIN_UI": "true",
    }
    return env


def wait_serving(url: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll the health route until LNbits answers (200, or 307 before its first install)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as http:
        while True:
            if not alive():
                raise ProcessLookupError(f"LNbits exited before it answered ({last})")
            try:
                response = http.get(f"{url}{HEALTH}", follow_redirects=False)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if response.status_code in (200, 307):
                    return
                last = f"HTTP {response.status_code}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"LNbits did not answer within {timeout:.0f} s ({last})")
            time.sleep(0.1)


@dataclass
class LnbitsServer:
    """One LNbits process on loopback (a free port unless one is given); a context manager too."""

    install: LnbitsInstall
    data_dir: Path
    host: str = HOST
    port: int | None = None
    log_path: Path | None = None
    ready_timeout: float = READY_TIMEOUT_S
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if self.port is None:
            raise LnbitsServerError("LNbits has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start LNbits and wait until it answers; `LnbitsServerError` with the log's tail if it does not."""
        if self._process is not None:
            raise LnbitsServerError("LNbits already started")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="lnbits-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        for directory in (self.data_dir / "logs", self.install.site_packages / "lnbits" / "extensions"):
            directory.mkdir(parents=True, exist_ok=True)  # what the `lnbits` command creates before it serves
        argv = [str(self.install.python), "-m", "uvicorn", APP, "--host", self.host, "--port", str(self.port)]
        argv += ["--loop", "uvloop"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                cwd=self.install.site_packages,
                env=lnbits_env(self.data_dir) | {"HOST": self.host, "PORT": str(self.port)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                process_group=0,
                preexec_fn=DIE_WITH_PARENT,  # only calls prctl(2): safe after fork
            )
        atexit.register(self.stop)
        try:
            wait_serving(self.url, timeout=self.ready_timeout, alive=self.running)
        except (TimeoutError, ProcessLookupError) as exc:
            returncode = self._process.poll()
            self.stop()
            how = f" ({describe_exit(returncode)})" if returncode is not None else ""
            raise LnbitsServerError(f"{exc}{how}; log {self.log_path}:\n{tail(self.log_path)}") from None
        return self

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to its process group, up to `grace` seconds, then SIGKILL. Idempotent."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):  # anything it started and left behind
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def smoke_start(install: LnbitsInstall) -> None:
    """Start LNbits from `install` on a throwaway data directory and stop it (`LnbitsInstallError` if it fails)."""
    with tempfile.TemporaryDirectory(prefix="lnbits-smoke-") as scratch:
        server = LnbitsServer(install, Path(scratch) / "data", log_path=Path(scratch) / "lnbits.log")
        try:
            server.start()
        except LnbitsServerError as exc:
            raise LnbitsInstallError(f"LNbits {install.version} installed but does not start: {exc}") from None
        finally:
            server.stop()
