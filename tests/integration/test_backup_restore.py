"""runbooks/backup-restore.md, tried: a running router's database dumped with pg_dump (custom format), restored
with pg_restore into a fresh database, a router started on it; a request answered before the dump is refused
as a replay, the registry and the metering records are there, and the router serves new requests.

Needs a pg_dump at least as new as the server (tests.support.pgtools); skipped, saying what was tried, without."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient
from tests.support import database
from tests.support.pgtools import find_pg_tools, server_major
from tests.support.router import ADMIN
from tests.support.services import Network, network, wait_until_node_listed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODEL = "fedai-mock-1"
RECEIPTS = "SELECT request_id, origin_id, node, event FROM metering_records ORDER BY request_id"


def _database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode(errors="replace")
    assert proc.returncode == 0, f"{argv[0]} failed:\n{out}"


async def test_a_restored_database_keeps_replay_protection_registry_and_receipts(tmp_path: Path) -> None:
    async with database.test_database() as source:
        tools, tried = find_pg_tools(await server_major(source))
        if tools is None:
            pytest.skip("no pg_dump/pg_restore as new as the server: " + "; ".join(tried))
        router_keys = Keys.generate()
        client_keys = Keys.generate()
        with network(tmp_path) as net:
            before = net.router("router", router_keys, source)
            node = net.node("node", before)
            wait_until_node_listed(before, node)
            async with AsyncClient(before.url, client_keys, router_pubkey=router_keys.pubkey) as client:
                served = await client.infer(MODEL, "before the backup", max_tokens=8)
            answered = served.request.to_json()  # the client's signed request, answered once

            dump = tmp_path / "router.dump"
            await run(str(tools.pg_dump), "--format=custom", "--no-owner", "--file", str(dump), source)

            target = _database(source, f"fedai_restore_{secrets.token_hex(4)}")
            admin = await asyncpg.connect(source)
            try:
                await admin.execute(f'CREATE DATABASE "{urlsplit(target).path[1:]}"')
            finally:
                await admin.close()
            try:
                await run(str(tools.pg_restore), "--no-owner", "--exit-on-error", "--dbname", target, str(dump))
                await _check_restored(net, router_keys, client_keys, target, source, answered, node.keys.pubkey)
            finally:
                admin = await asyncpg.connect(source)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(target).path[1:]}" WITH (FORCE)')
                finally:
                    await admin.close()


async def _check_restored(
    net: Network, router_keys: Keys, client_keys: Keys, target: str, source: str, answered: str, node: str
) -> None:
    source_db, target_db = await asyncpg.connect(source), await asyncpg.connect(target)
    try:
        receipts = await source_db.fetch(RECEIPTS)
        assert len(receipts) == 1
        assert await target_db.fetch(RECEIPTS) == receipts  # the signed metering record, byte for byte
        assert await target_db.fetchval("SELECT count(*) FROM nodes WHERE pubkey = $1", node) == 1
    finally:
        await source_db.close()
        await target_db.close()
    # the same router (key) on the restored database, a new process: its in-memory replay guard is empty, so a
    # refused replay comes from the restored `nonces`; the restored heartbeat counts as fresh
    after = net.router("restored", router_keys, target, ROUTER_HEARTBEAT_TTL_MS="600000")
    async with httpx.AsyncClient(timeout=30) as http:
        status = (await http.get(after.url + "/status", headers=ADMIN)).json()
        assert [n["pubkey"] for n in status["nodes"]] == [node]  # the registry, loaded from the restore
        replayed = await http.post(after.url + "/infer", content=answered)
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (409, "replay"), replayed.text
    async with AsyncClient(after.url, client_keys, router_pubkey=router_keys.pubkey) as client:
        chain = await client.infer(MODEL, "after the restore", max_tokens=8)
    assert chain.node == node  # the restored router serves new requests
    target_db = await asyncpg.connect(target)
    try:
        assert await target_db.fetchval("SELECT count(*) FROM metering_records") == 2
    finally:
        await target_db.close()
