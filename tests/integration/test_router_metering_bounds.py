"""Metering bounded by what the client agreed, against scripted nodes that lie consistently (their response and
metering agree, the price is their advertised rate times the tokens they claim): token counts beyond storage,
output beyond max_tokens, input beyond the prompt, a price above max_price_msat or the quote."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from tests.integration.conftest import SpawnNode
from tests.support.fake_node import FakeNode
from tests.support.router import RunningRouter


class SlowCountingWriter:
    """The router's metering executor, slowed so that writers arriving during a flush share the next batch,
    and noting how many rows each batch carried."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[int] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.batches.append(len(args[0]))
        await asyncio.sleep(0.4)
        return await self.inner.fetch(query, *args)

    async def executemany(self, command: str, args: Any) -> None:
        await self.inner.executemany(command, args)


def _request(router: RunningRouter, keys: Keys, **fields: Any) -> Event:
    payload = InferenceRequest(model="fake-model", prompt="hello", max_tokens=8, **fields)
    return seal(keys, Kind.INFER_REQUEST, payload, to=router.pubkey, nonce=True)


async def _post(http: httpx.AsyncClient, router: RunningRouter, event: Event) -> httpx.Response:
    return await http.post(router.url + "/infer", content=event.to_json())


async def _drain(stream: Any, into: list[str]) -> None:
    async for delta in stream:
        into.append(delta)


async def _attempts(pool: asyncpg.Pool, origin: str) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT node, outcome FROM dispatch_attempts WHERE request_id = $1", origin)
    return [(r["node"], r["outcome"]) for r in rows]


def _quarantined(router: RunningRouter, node: FakeNode) -> bool:
    return router.service.registry.nodes[node.keys.pubkey].cooldown_until > time.time()


def _refusal_reasons(caplog: pytest.LogCaptureFixture) -> str:
    """Why the router refused node replies: in its log (clients get only the code)."""
    return " ".join(str(getattr(r, "reason", "")) for r in caplog.records if r.getMessage() == "node attempt failed")


async def test_a_node_reporting_2_31_tokens_gets_a_typed_error_and_its_batch_mates_are_served(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedai.router.dispatch")
    liar = await spawn_node(report_tokens=(2**31, 3))  # one above Postgres `integer`, billed at its own rate
    good = await spawn_node()
    writer = SlowCountingWriter(router.service.metering._db)
    router.service.metering._db = writer
    async with httpx.AsyncClient(timeout=30) as http:
        leader = asyncio.create_task(_post(http, router, _request(router, Keys.generate(), nodes=[good.keys.pubkey])))
        await asyncio.sleep(0.2)  # the leader's metering is being flushed: everything after it shares one batch
        lied = _request(router, Keys.generate(), nodes=[liar.keys.pubkey])
        honest = [_request(router, Keys.generate(), nodes=[good.keys.pubkey]) for _ in range(4)]
        answers = await asyncio.gather(*(_post(http, router, e) for e in [lied, *honest]))
        assert (await leader).status_code == 200
    assert (answers[0].status_code, answers[0].json()["error"]["code"]) == (502, "upstream_error")
    assert "invalid_event" in _refusal_reasons(caplog)
    assert [a.status_code for a in answers[1:]] == [200] * 4
    assert writer.batches[:2] == [1, 4]  # the four honest records went as one batch after the leader's
    origins = {r["origin_id"] for r in await db_pool.fetch("SELECT origin_id FROM metering_records")}
    assert lied.id not in origins and {e.id for e in honest} <= origins
    assert _quarantined(router, liar) and liar.calls == 1


async def test_a_price_above_max_price_msat_is_refused_and_served_elsewhere(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    # worst case for "hello" (2 tokens estimated) and 8 output tokens: liar 10 msat, good 18 msat: both fit 18
    liar = await spawn_node(input_msat=1000, output_msat=1000, report_tokens=(500, 3))  # bills 503 msat
    good = await spawn_node(input_msat=1000, output_msat=2000)
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        chain = await client.infer("fake-model", "hello", max_tokens=8, max_price_msat=18)
    assert (chain.node, chain.record.price_msat) == (good.keys.pubkey, 9)
    assert liar.calls == 1 and await _attempts(db_pool, chain.request.id) == [(liar.keys.pubkey, "upstream_error")]
    # an over-cap bill alone may be an honest node's real token count above the router's estimate: a tight cap
    # chosen by a client must not quarantine it (verify.AboveAgreedPrice)
    assert not _quarantined(router, liar)


async def test_a_price_above_the_quote_is_refused_and_served_elsewhere(
    router: RunningRouter, spawn_node: SpawnNode
) -> None:
    good = await spawn_node(input_msat=1000, output_msat=2000)
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        quote = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
        assert (quote.node, quote.price.total_msat) == (good.keys.pubkey, 18)
        # a cheaper node joins (worst case 10 msat: ranked first, within the quote) and bills 503 msat
        liar = await spawn_node(input_msat=1000, output_msat=1000, report_tokens=(500, 3))
        chain = await client.infer("fake-model", "hello", max_tokens=8, quote_id=quote.quote_id)
    assert (chain.node, chain.record.price_msat) == (good.keys.pubkey, 9)
    assert liar.calls == 1 and not _quarantined(router, liar)


@pytest.mark.parametrize(
    ("tokens", "why"),
    [((3, 9), "output tokens above max_tokens"), ((len("hello") + 1024 + 1, 3), "input tokens above")],
    ids=["output", "input"],
)
async def test_tokens_beyond_what_the_request_allows_are_refused(
    router: RunningRouter,
    spawn_node: SpawnNode,
    db_pool: asyncpg.Pool,
    tokens: tuple[int, int],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fedai.router.dispatch")
    liar = await spawn_node(report_tokens=tokens)
    event = _request(router, Keys.generate())  # max_tokens 8, prompt "hello", no price cap
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await _post(http, router, event)
    assert (resp.status_code, resp.json()["error"]["code"]) == (502, "upstream_error")
    assert why in _refusal_reasons(caplog)
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0
    assert liar.calls == 1 and _quarantined(router, liar)


async def test_max_price_msat_zero_means_zero(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()  # charges 9 msat
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.infer("fake-model", "hello", max_tokens=8, max_price_msat=0)
        assert err.value.code == "no_capacity" and "price=1" in err.value.message
        free = await spawn_node(input_msat=0, output_msat=0)
        chain = await client.infer("fake-model", "hello", max_tokens=8, max_price_msat=0)
    assert (chain.node, chain.record.price_msat) == (free.keys.pubkey, 0)


@pytest.mark.parametrize(
    ("tokens", "why", "quarantined"), [((500, 3), "price above", False), ((3, 17), "output tokens above", True)]
)
async def test_a_stream_whose_metering_breaks_the_bounds_ends_with_a_typed_error(
    router: RunningRouter,
    spawn_node: SpawnNode,
    db_pool: asyncpg.Pool,
    tokens: tuple[int, int],
    why: str,
    quarantined: bool,
) -> None:
    liar = await spawn_node(report_tokens=tokens)
    received: list[str] = []
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        stream = await client.stream("fake-model", "hello", max_tokens=16, max_price_msat=100)
        with pytest.raises(FedaiError) as err:
            await _drain(stream, received)
    assert err.value.code == "upstream_error" and why in err.value.message
    assert "".join(received) == "alpha bravo charlie delta echo foxtrot"  # relayed before the metering came
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0
    assert _quarantined(router, liar) == quarantined
