"""Router /infer/stream against scripted streaming nodes: chunks relayed as they come, the chain verified at the
end, failover only before the first chunk, typed error events after it, and cancel-and-meter on disconnect."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from fedai.service.sse import SSEDecoder
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.wait import eventually


async def _collect(router: RunningRouter, **options: object) -> tuple[list[tuple[float, str]], object]:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=16, **options)  # type: ignore[arg-type]
        started = time.perf_counter()
        deltas = [(time.perf_counter() - started, d) async for d in stream]
        return deltas, stream.chain


async def test_chunks_arrive_as_generated_and_the_chain_verifies(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node()
    node.word_delay_s = 0.1
    deltas, chain = await _collect(router)
    text = "".join(d for _, d in deltas)
    assert text == "alpha bravo charlie delta echo foxtrot" == chain.output  # type: ignore[attr-defined]
    assert deltas[0][0] < deltas[-1][0] - 0.3  # the first chunk came long before the last (not one block)
    row = await db_pool.fetchrow("SELECT node, attempt FROM metering_records")
    assert (row["node"], row["attempt"]) == (node.keys.pubkey, 1)
    metrics = (await httpx.AsyncClient().get(router.url + "/metrics", headers=router.admin)).text
    assert 'fedai_router_streams_total{outcome="done"} 1.0' in metrics
    assert "fedai_router_ttft_seconds_count 1.0" in metrics


async def _drain(stream: object, into: list[str]) -> None:
    async for delta in stream:  # type: ignore[attr-defined]
        into.append(delta)


@pytest.mark.parametrize("behaviour", ["error_500", "stream_error_first"])
async def test_failover_before_the_first_chunk(router: RunningRouter, spawn_node: SpawnNode, behaviour: str) -> None:
    bad = await spawn_node(behaviour=behaviour, input_msat=1, output_msat=1)
    good = await spawn_node()
    _, chain = await _collect(router)
    assert chain.node == good.keys.pubkey  # type: ignore[attr-defined]
    assert bad.calls == 1


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [("stream_error_mid", "upstream_error"), ("bad_chunk", "upstream_error"), ("stream_die_mid", "upstream_error")],
)
async def test_failure_after_the_first_chunk_is_a_typed_error_event(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool, behaviour: str, code: str
) -> None:
    bad = await spawn_node(behaviour=behaviour)
    other = await spawn_node(input_msat=5000, output_msat=5000)
    received: list[str] = []
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=16)
        with pytest.raises(FedaiError) as err:
            await _drain(stream, received)
    assert err.value.code == code
    assert received[:1] == ["alpha"]  # the client had the first chunk: no silent failover after it
    assert other.calls == 0 and bad.calls == 1
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0
    assert router.service.registry.nodes[bad.keys.pubkey].cooldown_until > time.time()


async def test_client_disconnect_cancels_the_node_and_meters_what_it_produced(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node()
    node.word_delay_s = 0.3
    keys = Keys.generate()
    event = seal(
        keys,
        Kind.INFER_REQUEST,
        InferenceRequest(model="fake-model", prompt="hi", max_tokens=16, stream=True),
        to=router.pubkey,
        nonce=True,
    )
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", router.url + "/infer/stream", content=event.to_json()) as resp,
    ):
        decoder = SSEDecoder()
        async for data in resp.aiter_bytes():
            if any(e.event == "chunk" for e in decoder.feed(data)):
                break  # leave after the first chunk
    await eventually(lambda: node.cancelled != set(), within=5, what="router sends infer.cancel")
    await eventually(lambda: node.streams_finished == 1, within=5, what="node ends the stream")
    deadline = time.monotonic() + 5
    while (row := await db_pool.fetchrow("SELECT origin_id, event FROM metering_records")) is None:
        assert time.monotonic() < deadline, "cancelled stream was not metered"
        await asyncio.sleep(0.05)
    assert row["origin_id"] == event.id
    state = router.service.registry.nodes[node.keys.pubkey]
    await eventually(lambda: state.in_flight == 0, what="node leaves the in-flight count")
    metrics = (await httpx.AsyncClient().get(router.url + "/metrics", headers=router.admin)).text
    assert 'fedai_router_streams_total{outcome="cancelled"} 1.0' in metrics


async def test_stream_bad_input_gets_normal_http_errors(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    async with httpx.AsyncClient() as http:
        malformed = await http.post(router.url + "/infer/stream", content=b"{nope")
        unknown = await http.post(
            router.url + "/infer/stream",
            content=seal(
                Keys.generate(),
                Kind.INFER_REQUEST,
                InferenceRequest(model="nope", prompt="x", max_tokens=4),
                to=router.pubkey,
            ).to_json(),
        )
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_json")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_model")


async def test_replayed_stream_request_is_409(router: RunningRouter, spawn_node: SpawnNode) -> None:
    node = await spawn_node()
    node.word_delay_s = 0.0
    event = seal(
        Keys.generate(),
        Kind.INFER_REQUEST,
        InferenceRequest(model="fake-model", prompt="hi", max_tokens=8),
        to=router.pubkey,
        nonce=True,
    )
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.post(router.url + "/infer/stream", content=event.to_json())
        again = await http.post(router.url + "/infer/stream", content=event.to_json())
    assert first.status_code == 200 and b"event: done" in first.content
    assert (again.status_code, again.json()["error"]["code"]) == (409, "replay")
    assert node.calls == 1


async def test_every_node_failing_before_a_chunk_is_a_typed_error_event(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    """The headers go out while the node starts; a failure that depends on the nodes is the stream's error event."""
    await spawn_node(behaviour="stream_error_first")
    await spawn_node(behaviour="error_500")
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=16)
        received: list[str] = []
        with pytest.raises(FedaiError) as err:
            await _drain(stream, received)
    assert (err.value.code, received) == ("upstream_error", [])
    assert "2 node(s) tried" in err.value.message
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0


async def _refusal(router: RunningRouter, **options: object) -> FedaiError:
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await _drain(await client.stream("peer-only", "hello", max_tokens=8, **options), [])  # type: ignore[arg-type]
    return err.value


async def test_a_stream_no_local_node_serves_says_streams_are_not_offloaded(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    """With federation on, /infer could offload the request to a peer router; /infer/stream never does, and
    its refusal says so under the same code rather than claiming that no node serves the model."""
    await reset_database(db_pool)
    async with running_router(database_url, relays=[own_relay_url]) as federated:
        err = await _refusal(federated)
        assert (err.code, err.message) == (
            "unknown_model",
            "no local node serves model 'peer-only'; streamed requests are not offloaded to peer routers "
            "(send it without streaming)",
        )
        kept_here = await _refusal(federated, privacy=3)  # PL3 never leaves the router, streamed or not
        assert (kept_here.code, kept_here.message) == ("unknown_model", "no node serves model 'peer-only'")


async def test_without_federation_the_stream_refusal_is_the_schedulers(router: RunningRouter) -> None:
    err = await _refusal(router)
    assert (err.code, err.message) == ("unknown_model", "no node serves model 'peer-only'")
