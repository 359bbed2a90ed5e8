"""Router /infer against scripted nodes: the verified chain, failover, live load, and bad input."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event, compute_id, decode_event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, encode_payload
from fedai.sdk import AsyncClient
from fedai.sdk.chain import verify_chain
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter


def _request(router: RunningRouter, keys: Keys, model: str = "fake-model", **kw: object) -> Event:
    payload = InferenceRequest(model=model, prompt="hello", max_tokens=8)
    return seal(keys, Kind.INFER_REQUEST, payload, to=kw.pop("to", router.pubkey), nonce=True, **kw)  # type: ignore[arg-type]


async def _post(router: RunningRouter, body: bytes | Event, path: str = "/infer") -> httpx.Response:
    content = body.to_json() if isinstance(body, Event) else body
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(router.url + path, content=content)


def _code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def _metering_rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM metering_records"))


async def test_round_trip_returns_verified_chain_and_stores_metering(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fake-model", "hello", max_tokens=8)
    assert (chain.node, chain.router, chain.output) == (node.keys.pubkey, router.pubkey, "fake answer 1")
    row = await db_pool.fetchrow("SELECT * FROM metering_records WHERE request_id = $1", chain.forwarded.id)
    assert row is not None
    assert (row["origin_id"], row["client"], row["node"]) == (chain.request.id, chain.request.pubkey, node.keys.pubkey)
    assert row["price_msat"] == chain.record.price_msat == 9  # (3 in * 1000 + 3 out * 2000) msat per 1k tokens
    stored = decode_event(msgspec.json.encode(row["event"]))
    assert stored == chain.metering


async def test_large_node_reply_is_read_whole(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node(behaviour="big")  # ~400 kB: more than one socket read
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fake-model", "hello", max_tokens=8)
    assert len(chain.output) > 400_000


async def test_answer_is_bound_to_the_request(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    keys = Keys.generate()
    event = _request(router, keys)
    resp = await _post(router, event)
    assert resp.status_code == 200
    answer = decode_event(resp.content)
    chain = verify_chain(event, answer, router.pubkey)
    assert chain.forwarded.tag("p") == chain.node
    other = _request(router, keys)
    with pytest.raises(Exception, match="router answer"):
        verify_chain(other, answer, router.pubkey)


@pytest.mark.parametrize(
    "behaviour", ["bad_signature", "wrong_binding", "wrong_prompt_hash", "overcharge", "error_500", "busy"]
)
async def test_failover_to_a_good_node(router: RunningRouter, spawn_node: SpawnNode, behaviour: str) -> None:
    bad = await spawn_node(behaviour=behaviour, input_msat=1, output_msat=1)  # cheapest: chosen first
    good = await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fake-model", "hello", max_tokens=8)
    assert chain.node == good.keys.pubkey
    assert bad.calls == 1 and good.calls == 1
    state = router.service.registry.nodes[bad.keys.pubkey]
    assert state.cooldown_until > time.time()  # the failing node cools down
    metrics = (await httpx.AsyncClient().get(router.url + "/metrics", headers=router.admin)).text
    assert "fedai_router_failovers_total" in metrics


async def test_all_nodes_failing_gives_502_and_stores_nothing(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node(behaviour="bad_signature")
    await spawn_node(behaviour="error_500")
    resp = await _post(router, _request(router, Keys.generate()))
    assert resp.status_code == 502 and _code(resp) == "upstream_error"
    assert await _metering_rows(db_pool) == 0


async def test_node_timeout_gives_504(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node(behaviour="slow", delay_s=3.0)  # router's node timeout is 1.5 s
    resp = await _post(router, _request(router, Keys.generate()))
    assert resp.status_code == 504 and _code(resp) == "upstream_timeout"


async def test_timeout_then_failover(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node(behaviour="slow", delay_s=3.0, input_msat=1, output_msat=1)
    good = await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fake-model", "hi", max_tokens=8)
    assert chain.node == good.keys.pubkey


async def test_live_load_spreads_concurrent_requests(router: RunningRouter, spawn_node: SpawnNode) -> None:
    """The seed's failure: load learned only at heartbeat. Here capacity-1 nodes each get one request."""
    nodes = [await spawn_node(delay_s=0.4, capacity=1) for _ in range(3)]
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chains = await asyncio.gather(*(client.infer("fake-model", f"q{i}", max_tokens=8) for i in range(3)))
    assert sorted(c.node for c in chains) == sorted(n.keys.pubkey for n in nodes)
    assert all(n.calls == 1 for n in nodes)


async def test_no_node_available_is_503_with_retry_after_and_keeps_the_id(
    router: RunningRouter, spawn_node: SpawnNode
) -> None:
    node = await spawn_node(capacity=1, delay_s=0.5)
    keys = Keys.generate()
    async with AsyncClient(router.url, keys, router_pubkey=router.pubkey) as client:
        first = asyncio.create_task(client.infer("fake-model", "busy", max_tokens=8))
        await asyncio.sleep(0.15)
        event = _request(router, keys)
        resp = await _post(router, event)
        assert resp.status_code == 503 and _code(resp) == "no_capacity"
        assert int(resp.headers["Retry-After"]) >= 1
        await first
    # nothing was consumed: the same signed request is served once the node is free
    again = await _post(router, event)
    assert again.status_code == 200, again.text
    assert node.calls == 2


async def test_unknown_model_is_404(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    resp = await _post(router, _request(router, Keys.generate(), model="no-such-model"))
    assert resp.status_code == 404 and _code(resp) == "unknown_model"


async def _bad_envelopes(router: RunningRouter) -> list[tuple[str, bytes, int, str]]:
    keys = Keys.generate()
    good = _request(router, keys)
    forged = msgspec.structs.replace(good, content=good.content.replace("hello", "HELLO"))
    bad_sig = msgspec.structs.replace(good, sig=("0" if good.sig[0] != "0" else "1") + good.sig[1:])
    now = int(time.time())
    payload = encode_payload(InferenceRequest(model="fake-model", prompt="x", max_tokens=4))
    streamed = encode_payload(InferenceRequest(model="fake-model", prompt="x", max_tokens=4, stream=True))

    def sealed(content: str = payload, *, kind: int = Kind.INFER_REQUEST, to: str = router.pubkey, **at: int) -> bytes:
        """The client's request, changed in one way (`at`: `created_at` or `expiration`)."""
        return seal(keys, kind, content, to=to, **at).to_json()

    return [
        ("malformed json", b"{not json", 400, "invalid_json"),
        ("not an event", b'{"hello": 1}', 400, "invalid_event"),
        ("missing payload fields", sealed('{"model":"fake-model"}'), 400, "invalid_event"),
        ("wrong kind", sealed(kind=Kind.QUOTE_REQUEST), 400, "invalid_event"),
        ("forged id", forged.to_json(), 400, "invalid_event"),
        ("bad signature", bad_sig.to_json(), 401, "invalid_signature"),
        ("stale", sealed(created_at=now - 600), 401, "stale"),
        ("future", sealed(created_at=now + 600), 401, "stale"),
        ("expired", sealed(expiration=now - 1), 401, "expired"),
        ("wrong recipient", sealed(to=Keys.generate().pubkey), 403, "wrong_recipient"),
        ("oversized", b"x" * (300 * 1024), 413, "too_large"),
        ("stream on /infer", sealed(streamed), 400, "invalid_request"),
    ]


async def test_bad_envelopes_get_typed_errors_and_change_nothing(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node()
    nonces_before = await db_pool.fetchval("SELECT count(*) FROM nonces")  # the node's heartbeat
    for name, body, status, code in await _bad_envelopes(router):
        resp = await _post(router, body)
        assert (resp.status_code, _code(resp)) == (status, code), name
        assert resp.json()["error"]["message"], name
    assert node.calls == 0
    assert await _metering_rows(db_pool) == 0
    assert await db_pool.fetchval("SELECT count(*) FROM nonces") == nonces_before


async def test_replayed_request_is_409(router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool) -> None:
    node = await spawn_node()
    event = _request(router, Keys.generate())
    assert (await _post(router, event)).status_code == 200
    resp = await _post(router, event)
    assert resp.status_code == 409 and _code(resp) == "replay"
    assert node.calls == 1 and await _metering_rows(db_pool) == 1


async def test_rate_limit_is_per_client_with_retry_after(database_url: str, db_pool: asyncpg.Pool) -> None:
    from tests.support.router import reset_database, running_router

    await reset_database(db_pool)
    async with running_router(database_url, rate_limit_max=2, rate_limit_window_ms=60_000) as router:
        keys = Keys.generate()
        codes = [(await _post(router, _request(router, keys))) for _ in range(3)]
        assert [c.status_code for c in codes[:2]] == [404, 404]  # no nodes: counted, refused after the limit
        assert codes[2].status_code == 429 and _code(codes[2]) == "rate_limited"
        assert int(codes[2].headers["Retry-After"]) >= 1
        other = await _post(router, _request(router, Keys.generate()))
        assert other.status_code == 404  # another client is unaffected


async def test_client_allow_and_block_lists(database_url: str, db_pool: asyncpg.Pool) -> None:
    from tests.support.router import reset_database, running_router

    allowed, blocked, stranger = Keys.generate(), Keys.generate(), Keys.generate()
    await reset_database(db_pool)
    async with running_router(database_url, client_allowlist=frozenset({allowed.pubkey})) as router:
        assert _code(await _post(router, _request(router, stranger))) == "forbidden"
        assert _code(await _post(router, _request(router, allowed))) == "unknown_model"
    async with running_router(database_url, client_blocklist=frozenset({blocked.pubkey})) as router:
        resp = await _post(router, _request(router, blocked))
        assert resp.status_code == 403 and _code(resp) == "forbidden"
        assert _code(await _post(router, _request(router, stranger))) == "unknown_model"


def test_forged_id_helper_really_differs() -> None:
    keys = Keys.generate()
    event = sign_event(keys, 1, "a")
    assert compute_id(event.pubkey, event.created_at, event.kind, event.tags, "b").hex() != event.id


async def test_replay_raced_to_two_replicas_gets_one_answer(
    router: RunningRouter, spawn_node: SpawnNode, database_url: str, db_pool: asyncpg.Pool
) -> None:
    """The claim overlaps the node call; the same envelope sent to two replicas at once is still served once."""
    from tests.support.router import running_router
    from tests.support.wait import eventually

    node = await spawn_node(delay_s=0.2)
    async with running_router(database_url, keys=router.keys) as replica:
        await eventually(lambda: node.keys.pubkey in replica.service.registry.nodes, what="replica sees the node")
        event = _request(router, Keys.generate())
        first, second = await asyncio.gather(_post(router, event), _post(replica, event))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.text, second.text)
    loser = first if first.status_code == 409 else second
    assert _code(loser) == "replay"
    assert await _metering_rows(db_pool) == 1
