"""Graceful drain with real processes (runbooks/router-ops.md#drain, runbooks/node-ops.md#drain): a router's
SIGTERM lets the slow request in flight finish while it refuses new ones with `unavailable`; a node's drain
(`fedai node drain`) reaches its router at once, long before the heartbeat would expire, and its stream
finishes. The nodes are the mock runner, slowed down (NODE_MOCK_DELAY_MS, NODE_MOCK_TOKEN_MS)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from fedai.sdk.errors import RouterError
from tests.integration.test_devnet import FEDAI
from tests.support.router import ADMIN, reset_database
from tests.support.services import Service, network, wait_until_node_listed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MODEL = "fedai-mock-1"
SLOW = {"NODE_MOCK_DELAY_MS": "2000", "NODE_MOCK_TOKEN_MS": "300"}  # several seconds per answer


def node_in_flight(node: Service) -> int:
    """What the node says it has in flight (its own signed descriptor)."""
    answer = httpx.get(node.url + "/descriptor", timeout=5)
    answer.raise_for_status()
    count: int = json.loads(answer.json()["content"])["capacity"].get("in_flight", 0)
    return count


async def until(check: object, what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


def request_event(router: Keys) -> str:
    event = seal(
        Keys.generate(),
        Kind.INFER_REQUEST,
        InferenceRequest(model=MODEL, prompt="a new request", max_tokens=4),
        to=router.pubkey,
        nonce=True,
    )
    return event.to_json()


def verdicts(router: Service) -> dict[str, str]:
    answer = httpx.get(router.url + "/route/explain", params={"model": MODEL}, headers=ADMIN, timeout=5)
    answer.raise_for_status()
    return {entry["node"]: entry["verdict"] for entry in answer.json()["nodes"]}


async def test_a_request_in_flight_survives_the_routers_sigterm_and_new_ones_are_refused(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    router_keys = Keys.generate()
    with network(tmp_path) as net:
        router = net.router("router", router_keys, database_url, ROUTER_DRAIN_TIMEOUT_S="60")
        node = net.node("node", router, **SLOW)
        wait_until_node_listed(router, node)
        async with AsyncClient(router.url, Keys.generate(), router_pubkey=router_keys.pubkey) as client:
            long = asyncio.create_task(client.infer(MODEL, "a long answer", max_tokens=16))
            await until(lambda: node_in_flight(node) == 1, "the node has the request")
            router.child.popen.send_signal(signal.SIGTERM)
            await until(lambda: httpx.get(router.url + "/ready", timeout=5).status_code == 503, "/ready says 503")

            async with httpx.AsyncClient(timeout=10) as http:
                ready = await http.get(router.url + "/ready")
                refused = await http.post(router.url + "/infer", content=request_event(router_keys))
                health = await http.get(router.url + "/health")
            assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False, ready.text
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert refused.json()["error"]["message"].startswith("draining")
            assert refused.headers["Retry-After"] == "5"
            assert health.status_code == 200  # the ops paths keep answering
            assert not long.done()  # still in flight when the new one was refused

            chain = await long
        assert chain.node == node.keys.pubkey and chain.output  # verified by the SDK, or it raises
        assert await asyncio.to_thread(router.child.popen.wait, 60) == 0
    log = router.child.log_path.read_text()
    assert "router stopped (SIGTERM)" in log and "drained: no request in flight" in log, log
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 1  # the answer was metered


async def test_a_draining_node_is_not_scheduled_before_its_heartbeat_expires_and_its_stream_finishes(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    router_keys = Keys.generate()
    with network(tmp_path) as net:
        # heartbeats every 60 s, fresh for 120 s: only the drain notice can take the node out within the test
        router = net.router("router", router_keys, database_url, ROUTER_HEARTBEAT_TTL_MS="120000")
        leaving = net.node("leaving", router, NODE_HEARTBEAT_MS="60000", NODE_DRAIN_TIMEOUT_S="60", **SLOW)
        staying = net.node("staying", router, NODE_HEARTBEAT_MS="60000")
        wait_until_node_listed(router, leaving)
        wait_until_node_listed(router, staying)
        async with AsyncClient(router.url, Keys.generate(), router_pubkey=router_keys.pubkey) as client:
            stream = await client.stream(MODEL, "a long stream", max_tokens=16, nodes=[leaving.keys.pubkey])
            async with stream:
                deltas: list[str] = []
                reading = asyncio.create_task(_read(stream, deltas))
                await until(lambda: node_in_flight(leaving) == 1, "the leaving node streams")
                drain = await asyncio.create_subprocess_exec(
                    *FEDAI,
                    *("node", "drain", "--pid", str(leaving.child.popen.pid), "--timeout", "90"),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                await until(lambda: verdicts(router).get(leaving.keys.pubkey) == "draining", "verdict draining")
                assert verdicts(router)[staying.keys.pubkey] == "ok"
                # a new request goes to the node that stays, while the leaving one still streams
                chain = await client.infer(MODEL, "a new request", max_tokens=4)
                assert chain.node == staying.keys.pubkey
                assert not reading.done()
                await reading
            assert stream.chain.node == leaving.keys.pubkey  # verified by the SDK, or it raises
            assert "".join(deltas) == stream.chain.output
        out = (await asyncio.wait_for(drain.communicate(), 90))[0].decode()
        assert drain.returncode == 0, out
        assert f"node {leaving.child.popen.pid}: drained and stopped" in out
        assert leaving.child.popen.poll() == 0
    log = leaving.child.log_path.read_text()
    assert "told routers the node is draining" in log and "node stopped (SIGTERM)" in log, log


async def _read(stream: object, deltas: list[str]) -> None:
    async for delta in stream:  # type: ignore[attr-defined]
        deltas.append(delta)


async def test_a_drain_that_times_out_still_stops_the_router(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    router_keys = Keys.generate()
    with network(tmp_path) as net:
        router = net.router("router", router_keys, database_url, ROUTER_DRAIN_TIMEOUT_S="1")
        node = net.node("node", router, NODE_MOCK_DELAY_MS="60000")  # never answers within the test
        wait_until_node_listed(router, node)
        async with AsyncClient(router.url, Keys.generate(), router_pubkey=router_keys.pubkey) as client:
            stuck = asyncio.create_task(client.infer(MODEL, "an answer that never comes", max_tokens=4))
            await until(lambda: node_in_flight(node) == 1, "the node has the request")
            router.child.popen.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(router.child.popen.wait, 30) == 0  # not held by the stuck request
            with pytest.raises(RouterError) as cut:  # cut off after the drain timeout, with a typed answer
                await stuck
            assert cut.value.code == "unavailable" and "drain timeout passed" in cut.value.message
    log = router.child.log_path.read_text()
    assert "drain timed out with 1 requests in flight" in log and "router stopped (SIGTERM)" in log, log
    assert "Traceback" not in log
