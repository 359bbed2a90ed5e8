"""Run an ASGI app under uvicorn with the measured choices of docs/decisions.md#http-server."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn

from fedai.observability.logging import setup_logging
from fedai.observability.tracing import TracingConfigError, setup_tracing
from fedai.service.config import ConfigError

S = TypeVar("S")


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


def serve(app: Any, host: str, port: int) -> None:
    """Blocking: serve until SIGINT/SIGTERM, running the app's lifespan."""
    uvicorn.Server(uvicorn_config(app, host, port)).run()


def run_service(
    name: str, load_settings: Callable[[], S], build_app: Callable[[S], Any], address: Callable[[S], tuple[str, int]]
) -> int:
    """The body of a service's `__main__`: configuration errors exit 2 naming the variable, else serve (traced
    when the OTEL_* variables ask for it)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(name, getattr(settings, "log_level", "INFO"))
    try:
        tracer_provider = setup_tracing(f"fedai-{name}")  # off unless OTEL_* asks for traces
    except TracingConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    host, port = address(settings)
    try:
        serve(build_app(settings), host, port)
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans still batched
    return 0
