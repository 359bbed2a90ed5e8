"""Run an ASGI app under uvicorn with the choices DESIGN.md section 3 measured."""

from __future__ import annotations

import importlib.util
from typing import Any

import uvicorn


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
