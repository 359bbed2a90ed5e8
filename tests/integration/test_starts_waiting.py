"""A router started before its database and its relay (as in a container stack, or after a host reboot): with
ROUTER_DB_WAIT_S it waits for the database instead of exiting, then serves; a relay that is down at start is
connected to once it comes up (the relay pool reconnects forever), and the router's capabilities reach it.

The database "comes up" as a TCP proxy opened a second later on the port the router was given, in front of the
test server (FEDAI_TEST_DATABASE_URL); the relay is `fedai.nostr.local_relay` started late on its port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fedai.nostr import start_local_relay
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from tests.integration.test_devnet import marked_env
from tests.integration.test_faults import _held_within
from tests.integration.test_starts_stops import LISTENING, node_env, start
from tests.support import database
from tests.support.servers import free_port
from tests.support.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return  # the other side went away; closing below ends the pair
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tcp_proxy(port: int, target_host: str, target_port: int) -> AsyncIterator[None]:
    """127.0.0.1:`port` forwarding each connection to target_host:target_port."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


def _moved(dsn: str, port: int) -> str:
    """`dsn` with its host:port replaced by 127.0.0.1:`port`."""
    parts = urlsplit(dsn)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{auth}127.0.0.1:{port}").geturl()


def _health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:  # noqa: S310 - loopback http only
        return int(answer.status)


async def test_a_router_started_before_its_database_and_relay_waits_then_serves_and_announces() -> None:
    async with database.test_database() as dsn:
        await _wait_then_serve(dsn)


async def _wait_then_serve(dsn: str) -> None:
    with tempfile.TemporaryDirectory() as log_dir:
        db_port, relay_port = free_port(), free_port()
        target = urlsplit(dsn)
        keys = Keys.generate()
        relay_url = f"ws://127.0.0.1:{relay_port}"
        env = {
            **marked_env(uuid.uuid4().hex),
            "ROUTER_PRIVATE_KEY": keys.secret_hex,
            "ROUTER_DB_URL": _moved(dsn, db_port),
            "ROUTER_DB_WAIT_S": "60",
            "ROUTER_PORT": "0",
            "ROUTER_RELAYS": relay_url,
        }
        router = start("router", Path(log_dir), env, "router")
        relay = None
        try:
            await eventually(lambda: "database not ready" in router.text(), within=30, what="a retry logged")
            assert router.popen.poll() is None, router.text()
            assert not LISTENING.search(router.text())
            async with tcp_proxy(db_port, target.hostname or "127.0.0.1", target.port or 5432):
                await eventually(lambda: bool(LISTENING.search(router.text())), within=60, what="router listening")
                match = LISTENING.search(router.text())
                assert match is not None
                assert await asyncio.to_thread(_health, match.group(2)) == 200

                relay = await start_local_relay(port=relay_port)  # the relay comes up after the router
                assert await _held_within(relay_url, Kind.ROUTER_CAPS, keys.pubkey, 30), router.text()
                assert await asyncio.to_thread(router.stop, signal.SIGTERM) == 0, router.text()  # the proxy runs here
            warnings = [json.loads(line) for line in router.text().splitlines() if "database not ready" in line]
            assert warnings and all("ROUTER_DB_URL: cannot use" in w["msg"] for w in warnings)
            assert not re.search(re.escape(target.password or "\0"), router.text())
        finally:
            router.kill()
            if relay is not None:
                relay.shutdown()


async def test_when_its_wait_runs_out_the_router_exits_with_the_one_config_error() -> None:
    env = {
        **marked_env(uuid.uuid4().hex),
        "ROUTER_PRIVATE_KEY": Keys.generate().secret_hex,
        "ROUTER_DB_URL": f"postgresql://fedai:pw@127.0.0.1:{free_port()}/fedai",
        "ROUTER_DB_WAIT_S": "1",
    }
    with tempfile.TemporaryDirectory() as log_dir:
        router = start("router", Path(log_dir), env, "router")
        code = await asyncio.to_thread(router.popen.wait, 60)
        assert code == 2, router.text()
        lines = [line for line in router.text().splitlines() if not line.startswith("{")]
        assert len(lines) == 1 and lines[0].startswith("config error: ROUTER_DB_URL: cannot use "), router.text()
        assert "database not ready" in router.text()  # it did retry within its second


async def test_a_node_waits_for_its_replay_store_with_node_db_wait_s() -> None:
    async with database.test_database() as dsn:
        target, db_port = urlsplit(dsn), free_port()
        env = node_env(
            marked_env(uuid.uuid4().hex),
            Keys.generate().secret_hex,
            f"http://127.0.0.1:{free_port()}",  # no router: the node serves and keeps trying it
            Keys.generate().npub,
            free_port(),
            1000,
        )
        env |= {"NODE_DB_URL": _moved(dsn, db_port), "NODE_DB_WAIT_S": "60"}
        with tempfile.TemporaryDirectory() as log_dir:
            node = start("node", Path(log_dir), env, "node")
            try:
                await eventually(lambda: "database not ready" in node.text(), within=30, what="a retry logged")
                assert not LISTENING.search(node.text())
                async with tcp_proxy(db_port, target.hostname or "127.0.0.1", target.port or 5432):
                    await eventually(lambda: bool(LISTENING.search(node.text())), within=60, what="node listening")
                    assert await asyncio.to_thread(node.stop, signal.SIGTERM) == 0, node.text()
            finally:
                node.kill()
