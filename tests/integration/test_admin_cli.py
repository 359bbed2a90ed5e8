"""`fedai admin …` against a real router: signed with --admin-key, tables within 80 columns, --json documents,
and a key that is not an operator's refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.keys import Keys
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
async def routed(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningRouter, FakeNode, Keys]]:
    await reset_database(db_pool)
    operator = Keys.generate()
    async with running_router(database_url, admin_keys=frozenset({operator.pubkey})) as router:
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            yield router, node, operator


async def test_the_admin_commands_drain_a_node_make_a_key_and_show_the_audit(
    routed: tuple[RunningRouter, FakeNode, Keys],
) -> None:
    router, node, operator = routed
    common = ("--router", router.url, "--admin-key", operator.secret_hex)
    code, out, _ = await asyncio.to_thread(run, "admin", "node", "drain", node.keys.npub, *common, "--json")
    assert code == 0 and json.loads(out) == {"pubkey": node.keys.pubkey, "drained": True, "banned": False}
    assert router.service.registry.nodes[node.keys.pubkey].held

    code, out, _ = await asyncio.to_thread(run, "admin", "nodes", *common)
    assert code == 0 and "nodes (1)" in out and "yes" in out
    assert max(len(line) for line in out.splitlines()) <= 80

    client = Keys.generate()
    code, out, _ = await asyncio.to_thread(run, "admin", "apikey", "create", "--client", client.pubkey, *common)
    assert code == 0
    key = out.splitlines()[-1]
    assert key.startswith("fk-") and router.service.api_keys[hashlib.sha256(key.encode()).hexdigest()] == client.pubkey

    code, out, _ = await asyncio.to_thread(run, "admin", "fee", "--ppm", "300", *common)
    assert code == 0 and "0 msat + 300 ppm" in out and router.service.fees.ppm == 300

    code, out, _ = await asyncio.to_thread(run, "admin", "audit", *common, "--json")
    actions = [e["action"] for e in json.loads(out)["entries"]]
    assert actions == ["fee.set", "apikey.create", "node.drain"] and key not in out

    code, out, _ = await asyncio.to_thread(run, "admin", "audit", *common)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80


async def test_a_key_that_is_not_an_operators_is_refused(routed: tuple[RunningRouter, FakeNode, Keys]) -> None:
    router, node, _ = routed
    stranger = Keys.generate()
    code, _, err = await asyncio.to_thread(
        run, "admin", "node", "ban", node.keys.pubkey, "--router", router.url, "--admin-key", stranger.secret_hex
    )
    assert code == 1 and "error forbidden" in err
    assert not router.service.registry.nodes[node.keys.pubkey].held
