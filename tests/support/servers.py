"""Real HTTP servers on loopback for tests: run an ASGI app under uvicorn inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from fedai.service.server import uvicorn_config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_app(app: Any, port: int | None = None, tls: tuple[str, str] | None = None) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL; stops the server (and its lifespan) on exit.
    `tls` = (certificate file, key file) serves HTTPS."""
    port = port or free_port()
    ssl_files = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}
    config = uvicorn_config(app, "127.0.0.1", port, loop="none", **ssl_files)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the test owns signals
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
            raise RuntimeError("server exited during start")
        await asyncio.sleep(0.01)
    else:
        raise TimeoutError("server did not start")
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
