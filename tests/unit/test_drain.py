"""fedai.service.drain in-process: requests counted until their last byte, new ones refused once draining (ops
paths exempt), a bounded wait, hooks that fail without stopping the drain; and `fedai node drain`'s checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fedai.cli.main import cli
from fedai.cli.node_drain import alive, is_node
from fedai.service.drain import Drain, DrainGate


def app_with(drain: Drain, started: asyncio.Event, release: asyncio.Event) -> Starlette:
    async def slow_stream(_: Request) -> Response:
        async def body():  # type: ignore[no-untyped-def]
            started.set()
            yield b"first "
            await release.wait()
            yield b"last"

        return StreamingResponse(body())

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/stream", slow_stream), Route("/health", health)],
        middleware=[Middleware(DrainGate, drain=drain)],
    )


async def test_a_stream_in_flight_is_counted_to_its_end_and_new_requests_are_refused() -> None:
    drain, started, release = Drain(timeout_s=30), asyncio.Event(), asyncio.Event()
    transport = httpx.ASGITransport(app=app_with(drain, started, release))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        streaming = asyncio.create_task(http.get("/stream"))
        await started.wait()
        draining = asyncio.create_task(drain.run())
        await asyncio.sleep(0)  # the drain starts: it refuses from its first step
        assert drain.draining
        refused = await http.get("/stream")
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
        assert refused.headers["retry-after"] == "5"
        assert (await http.get("/health")).status_code == 200  # exempt
        assert not draining.done() and drain.in_flight == 1
        release.set()
        assert (await streaming).text == "first last"
        assert await draining is True
        assert drain.in_flight == 0


async def test_the_wait_is_bounded_and_a_failing_hook_does_not_stop_the_drain() -> None:
    drain = Drain(timeout_s=0.2)
    called: list[str] = []

    async def broken() -> None:
        called.append("broken")
        raise RuntimeError("no router answered")

    async def fine() -> None:
        called.append("fine")

    drain.on_drain(broken)
    drain.on_drain(fine)
    drain.enter()  # a request that never ends
    assert await drain.run() is False
    assert called == ["broken", "fine"] and drain.draining


def test_node_drain_refuses_a_process_that_is_not_a_node() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        result = CliRunner().invoke(cli, ["node", "drain", "--pid", str(sleeper.pid)])
        assert result.exit_code == 1
        assert "is not a fedai node" in result.output and "nothing sent" in result.output
        assert sleeper.poll() is None  # not signalled
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not alive(sleeper.pid)


def test_node_drain_needs_exactly_one_pid_source(tmp_path: Path) -> None:
    assert CliRunner().invoke(cli, ["node", "drain"]).exit_code == 2
    empty = tmp_path / "node.pid"
    empty.write_text("")
    result = CliRunner().invoke(cli, ["node", "drain", "--pid-file", str(empty)])
    assert result.exit_code == 2 and "no pid in it" in result.output


@pytest.mark.parametrize(
    ("cmdline", "node"),
    [
        ("/usr/bin/python3 -m fedai_node", True),
        ("/venv/bin/python3 /venv/bin/fedai node --port 8090", True),
        ("/usr/bin/python3 -m fedai_router", False),
        (None, True),  # no /proc to ask
    ],
)
def test_what_counts_as_a_node(cmdline: str | None, node: bool) -> None:
    assert is_node(cmdline) is node


def test_a_live_process_is_alive() -> None:
    assert alive(os.getpid())
