"""Quotes: each binding checked with a fresh quote (so the single-use check cannot answer for it), one spend
under a race, and a quote given back when no node served the request that spent it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import fedai_router.planning as planning_module
from fedai.protocol.errors import FedaiError
from fedai.sdk import AsyncClient
from fedai_router.store.quotes import QuoteRow
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter, reset_database, running_router


async def _used(pool: asyncpg.Pool, quote_id: str) -> bool:
    return await pool.fetchval("SELECT used_at IS NOT NULL FROM quotes WHERE id = $1", quote_id)  # type: ignore[no-any-return]


async def _refused(client: AsyncClient, *args: Any, **kw: Any) -> FedaiError:
    with pytest.raises(FedaiError) as err:
        await client.infer(*args, **kw)
    return err.value


async def test_a_quote_binds_its_client(router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool) -> None:
    await spawn_node()
    async with (
        AsyncClient(router.url, router_pubkey=router.pubkey) as owner,
        AsyncClient(router.url, router_pubkey=router.pubkey) as stranger,
    ):
        q = (await owner.quote("fake-model", max_tokens=8, prompt="hello")).quote
        err = await _refused(stranger, "fake-model", "hello", max_tokens=8, quote_id=q.quote_id)
        assert (err.code, err.message) == (
            "quote_invalid",
            "unknown quote for this client (quotes are per router and client)",
        )
        assert not await _used(db_pool, q.quote_id)
        assert (await owner.infer("fake-model", "hello", max_tokens=8, quote_id=q.quote_id)).output


@pytest.mark.parametrize(("model", "max_tokens"), [("other-model", 8), ("fake-model", 9)], ids=["model", "max_tokens"])
async def test_a_quote_binds_its_model_and_max_tokens(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool, model: str, max_tokens: int
) -> None:
    await spawn_node()
    await spawn_node(model="other-model")
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
        err = await _refused(client, model, "hello", max_tokens=max_tokens, quote_id=q.quote_id)
        assert (err.code, err.message) == ("quote_invalid", "request does not match the quote (model or max_tokens)")
        assert not await _used(db_pool, q.quote_id)
        # the same request without the quote is served: only the quote's binding refused it
        assert (await client.infer(model, "hello", max_tokens=max_tokens)).output


async def test_two_requests_racing_on_one_quote_get_one_answer(
    router: RunningRouter, spawn_node: SpawnNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await spawn_node()
    read = asyncio.Event()
    readers = 0
    real_get_quote = planning_module.get_quote

    async def both_read_first(pool: asyncpg.Pool, quote_id: str) -> QuoteRow | None:
        """Both requests see the quote unspent before either spends it: only the database can pick one."""
        nonlocal readers
        row = await real_get_quote(pool, quote_id)
        readers += 1
        if readers == 2:
            read.set()
        await asyncio.wait_for(read.wait(), 10)
        return row

    monkeypatch.setattr(planning_module, "get_quote", both_read_first)
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
        results = await asyncio.gather(
            *(client.infer("fake-model", "hello", max_tokens=8, quote_id=q.quote_id) for _ in range(2)),
            return_exceptions=True,
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], FedaiError) and errors[0].code == "quote_invalid"
    assert "already been used" in errors[0].message
    assert node.calls == 1


async def test_a_quote_is_given_back_when_every_node_fails_and_can_then_be_used(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node(behaviour="error_500")
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
        err = await _refused(client, "fake-model", "hello", max_tokens=8, quote_id=q.quote_id)
        assert err.code == "upstream_error"
        assert not await _used(db_pool, q.quote_id)  # no node served it: given back
        await spawn_node()  # a node that works joins (the failed one is cooling down)
        assert (await client.infer("fake-model", "hello", max_tokens=8, quote_id=q.quote_id)).output
        assert await _used(db_pool, q.quote_id)  # served: spent for good
        again = await _refused(client, "fake-model", "hello", max_tokens=8, quote_id=q.quote_id)
        assert (again.code, again.message) == ("quote_invalid", "quote has already been used")


async def _drain(stream: Any, into: list[str]) -> None:
    async for delta in stream:
        into.append(delta)


async def test_a_quote_is_given_back_when_a_stream_fails_before_its_first_chunk(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node(behaviour="stream_error_first")
    received: list[str] = []
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=16, prompt="hello")).quote
        stream = await client.stream("fake-model", "hello", max_tokens=16, quote_id=q.quote_id)
        with pytest.raises(FedaiError) as err:
            await _drain(stream, received)
        assert (err.value.code, received) == ("upstream_error", [])
        assert not await _used(db_pool, q.quote_id)
        await spawn_node()
        stream = await client.stream("fake-model", "hello", max_tokens=16, quote_id=q.quote_id)
        await _drain(stream, received)
    assert "".join(received) == "alpha bravo charlie delta echo foxtrot"
    assert await _used(db_pool, q.quote_id)


async def test_a_stream_that_fails_after_its_first_chunk_keeps_its_quote_spent(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node(behaviour="stream_error_mid")
    received: list[str] = []
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        q = (await client.quote("fake-model", max_tokens=16, prompt="hello")).quote
        stream = await client.stream("fake-model", "hello", max_tokens=16, quote_id=q.quote_id)
        with pytest.raises(FedaiError):
            await _drain(stream, received)
    assert received[:1] == ["alpha"]  # the node served part of it
    assert await _used(db_pool, q.quote_id)


async def test_a_quote_for_more_input_tokens_than_storage_holds_is_a_typed_error(
    router: RunningRouter, spawn_node: SpawnNode
) -> None:
    await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        with pytest.raises(FedaiError) as err:
            await client.quote("fake-model", max_tokens=8, input_tokens=2**31)  # quotes.input_tokens is `integer`
        assert err.value.code == "invalid_event"
        assert (await client.quote("fake-model", max_tokens=8, input_tokens=3)).quote.input_tokens == 3


async def test_an_unknown_quote_id_is_refused(router: RunningRouter, spawn_node: SpawnNode) -> None:
    await spawn_node()
    async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
        err = await _refused(client, "fake-model", "hello", max_tokens=8, quote_id="0" * 32)
    assert (err.code, err.message) == (
        "quote_invalid",
        "unknown quote for this client (quotes are per router and client)",
    )


FEE_MSAT = 100


class TestWithARouterFee:
    """A quote's total includes the router's fee: what the node may bill is the total without that fee."""

    @pytest.fixture
    async def router(self, database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
        await reset_database(db_pool)
        async with running_router(database_url, node_timeout_ms=1500, fee_base_msat=FEE_MSAT) as r:
            yield r

    async def test_the_node_may_bill_the_quote_without_the_fee_and_no_more(
        self, router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
    ) -> None:
        # "hello" is priced as 2 input tokens, plus 8 output tokens: 18 msat for the node, 118 with the fee
        honest = await spawn_node(input_msat=1000, output_msat=2000, report_tokens=(2, 8))  # bills 18
        async with AsyncClient(router.url, router_pubkey=router.pubkey) as client:
            quote = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
            assert (quote.price.total_msat, quote.price.router_fee_msat) == (18 + FEE_MSAT, FEE_MSAT)
            chain = await client.infer("fake-model", "hello", max_tokens=8, quote_id=quote.quote_id)
            assert (chain.node, chain.record.price_msat) == (honest.keys.pubkey, 18)
            honest.report_tokens = (10, 8)  # bills 26: within the quote's total, above the node's share of it
            quote = (await client.quote("fake-model", max_tokens=8, prompt="hello")).quote
            err = await _refused(client, "fake-model", "hello", max_tokens=8, quote_id=quote.quote_id)
        assert err.code == "upstream_error"
        assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 1
