"""A client that pins the wrong router key is told so: the router refuses a request sealed to another key
(`wrong_recipient`), and the SDK, seeing `/health` name a different key, raises `RouterKeyMismatch` with both
npubs, for calls and streams, sync and async; the CLI prints that sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.errors import ErrorCode
from fedai.protocol.keys import Keys, npub
from fedai.sdk import AsyncClient, Client, RouterError, RouterKeyMismatch
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

WRONG = Keys.generate()


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[RunningRouter]:
    await reset_database(db_pool)
    async with running_router(database_url) as running:
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(running.url, running.pubkey, node.keys, node.descriptor())).status_code == 200
            yield running


def _says_both_keys(err: RouterKeyMismatch, router: RunningRouter) -> None:
    assert err.code == ErrorCode.WRONG_RECIPIENT and isinstance(err, RouterError)
    assert (err.pinned, err.actual) == (WRONG.pubkey, router.pubkey)
    assert str(err) == (
        "the router's key does not match the one you pinned "
        f"(pinned {npub(WRONG.pubkey)}, router answered as {npub(router.pubkey)})"
    )


def _sync_calls(router: RunningRouter) -> list[RouterKeyMismatch]:
    raised = []
    with Client(router.url, router_pubkey=WRONG.npub) as client:
        for call in (
            lambda: client.infer("fake-model", "hi", max_tokens=8),
            lambda: client.quote("fake-model", max_tokens=8, prompt="hi"),
            lambda: list(client.stream("fake-model", "hi", max_tokens=8)),
        ):
            with pytest.raises(RouterKeyMismatch) as info:
                call()
            raised.append(info.value)
    return raised


async def test_a_wrong_pin_is_named_in_sync_calls_and_streams(router: RunningRouter) -> None:
    for err in await asyncio.to_thread(_sync_calls, router):
        _says_both_keys(err, router)


async def test_a_wrong_pin_is_named_in_async_calls_and_streams(router: RunningRouter) -> None:
    async with AsyncClient(router.url, router_pubkey=WRONG.pubkey) as client:
        with pytest.raises(RouterKeyMismatch) as infer:
            await client.infer("fake-model", "hi", max_tokens=8)
        _says_both_keys(infer.value, router)
        with pytest.raises(RouterKeyMismatch) as streamed:
            async with await client.stream("fake-model", "hi", max_tokens=8) as stream:
                _ = [delta async for delta in stream]
        _says_both_keys(streamed.value, router)


async def test_the_right_pin_in_either_form_works(router: RunningRouter) -> None:
    for pin in (router.pubkey, npub(router.pubkey)):
        async with AsyncClient(router.url, router_pubkey=pin) as client:
            assert (await client.infer("fake-model", "hi", max_tokens=8)).router == router.pubkey


async def test_the_cli_prints_the_mismatch(router: RunningRouter) -> None:
    args = ["infer", "--router", router.url, "--router-pubkey", WRONG.npub, "-m", "fake-model", "hi"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code != 0
    assert "does not match the one you pinned" in result.output and npub(router.pubkey) in result.output
