"""Run an ASGI app under uvicorn with the measured choices of docs/decisions.md#http-server, and a service's
whole life as a process (`run_service`): configuration, listening socket, start-up, serving, clean stop.

`run_service` owns the stop signals (SIGINT, SIGTERM, SIGHUP) for the process's whole life. uvicorn's own
handling raises a caught signal again once it has shut down: a `KeyboardInterrupt` traceback on Ctrl-C, and a
death by SIGTERM or SIGHUP that skips interpreter exit (an embedded PostgreSQL was left running). Here a stop
signal stops the server, runs the app's shutdown, logs one line and exits 0 (runbooks/router-ops.md#start).
SIGTERM to an app with a `Drain` (`app.state.drain`) drains first: new requests refused, those in flight
finished within the drain timeout (`fedai.service.drain`, runbooks/router-ops.md#drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from fedai.observability.logging import setup_logging
from fedai.observability.tracing import TracingConfigError, setup_tracing
from fedai.service.config import ConfigError
from fedai.service.drain import Drain

S = TypeVar("S")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CONFIG = 2  # configuration (a variable named) is wrong or unusable
EXIT_START_FAILED = 3  # anything else stopped the start-up
LISTEN_BACKLOG = 2048  # uvicorn's default
CANCEL_AFTER_DRAIN_S = 1  # after a drain that timed out, requests still running are cancelled this much later


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    has_httptools = importlib.util.find_spec("httptools") is not None
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop" if has_uvloop else "asyncio",
        "http": "httptools" if has_httptools else "h11",
        "ws": "websockets-sansio",
        "lifespan": "on",
        "access_log": False,  # request lines can carry identifiers; our own logs are redacted
        "log_level": "warning",
        "server_header": False,
        "proxy_headers": False,  # nothing here reads client addresses; operators front it with their own proxy
        "timeout_keep_alive": 30,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class Server(uvicorn.Server):
    """uvicorn's server without its signal handling: `run_service` handles the stop signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Stopper:
    """What a stop signal does: the first stops the server (during start-up it cancels the start-up; SIGTERM to
    an app with a `Drain` drains it first); a second SIGINT stops it without waiting for open connections, and a
    second signal of any kind during a drain ends the drain and stops without waiting."""

    server: Server
    starting: asyncio.Task[Any] | None = None
    signum: int | None = None
    drain: Drain | None = None
    draining: asyncio.Task[None] | None = None

    def __call__(self, signum: int) -> None:
        if self.signum is not None:
            self.server.force_exit = signum == signal.SIGINT or self.server.force_exit
            if self.draining is not None and not self.draining.done():
                self.server.config.timeout_graceful_shutdown = CANCEL_AFTER_DRAIN_S
                self.draining.cancel()
            return
        self.signum = signum
        if self.starting is None and signum == signal.SIGTERM and self.drain is not None:
            self.draining = asyncio.get_running_loop().create_task(self._drain(self.drain), name="fedai-drain")
            return
        self.server.should_exit = True
        if self.starting is not None:
            self.starting.cancel()

    async def _drain(self, drain: Drain) -> None:
        try:
            if not await drain.run():
                self.server.config.timeout_graceful_shutdown = CANCEL_AFTER_DRAIN_S
        finally:
            self.server.should_exit = True

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "exit"


def listen(variables: str, host: str, port: int) -> socket.socket:
    """The service's listening socket, bound before anything else starts; a failure names the variables."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{variables}: cannot listen on {host}:{port}: {reason}") from None
    return sock


def http_url(sock: socket.socket) -> str:
    """http://host:port of a bound socket (the port the kernel chose, if 0 was asked)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _run(name: str, app: Starlette, sock: socket.socket, config: uvicorn.Config, npub: str) -> str:
    """Start the app (its lifespan), log the listening line, serve until a stop signal; returns its name."""
    log = logging.getLogger(f"fedai.{name}")
    loop = asyncio.get_running_loop()
    server = Server(config)
    stop = Stopper(server, starting=asyncio.current_task(), drain=getattr(app.state, "drain", None))
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        async with app.router.lifespan_context(app):
            stop.starting = None
            url = http_url(sock)
            log.info(f"{name} listening on {url} (pubkey {npub})", extra={"url": url, "npub": npub})
            await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        if stop.signum is None:
            raise
        log.info(f"{name} stopped during start-up ({stop.name})")
        return stop.name
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    log.info(f"{name} stopped ({stop.name})")
    return stop.name


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


def run_service(
    name: str,
    load_settings: Callable[[], S],
    build_app: Callable[[S], Starlette],
    address: Callable[[S], tuple[str, int]],
    npub: Callable[[S], str],
) -> int:
    """The body of a service's `__main__`. Configuration that is wrong or unusable (a variable, the listening
    address, the database, an OTEL_* variable) prints one line `config error: <VARIABLE> ...` and exits 2;
    another start-up failure one line and exit 3; a stop signal ends it with exit 0. Traced when the OTEL_*
    variables ask for it (docs/observability.md)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(name, getattr(settings, "log_level", "INFO"))
    try:
        tracer_provider = setup_tracing(f"fedai-{name}")  # off unless OTEL_* asks for traces
    except TracingConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    host, port = address(settings)
    try:
        sock = listen(f"{name.upper()}_HOST/{name.upper()}_PORT", host, port)
        with sock, asyncio.Runner(loop_factory=_loop_factory()) as runner:
            app = build_app(settings)
            runner.run(_run(name, app, sock, uvicorn_config(app, host, port, lifespan="off"), npub(settings)))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback: the operator reads it at start
        print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans still batched
    return 0
