"""The admin API's listings page through everything exactly once, newest first, and return no prompt, output,
signed event or receipt body: metering records and federation jobs (rows written as the router writes them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import auth_header
from tests.support.router import RunningRouter, reset_database, running_router

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# five rows; the two at T0 + 2 min share a timestamp (the cursor must not skip or repeat either)
AT = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)]
SECRET_TEXT = "the-prompt-text-never-listed"


@pytest.fixture
async def listed(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningRouter, Keys]]:
    await reset_database(db_pool)
    operator, client, node, peer = (Keys.generate() for _ in range(4))
    for i, at in enumerate(AT):
        await db_pool.execute(
            """INSERT INTO metering_records (request_id, origin_id, client, node, model, input_tokens, output_tokens,
                   wall_ms, bytes_in, bytes_out, prompt_sha256, price_msat, event, created_at)
               VALUES ($1, $2, $3, $4, 'm', 3, 4, 12.5, 10, 20, $5, 7, $6, $7)""",
            f"{i:064x}",
            f"{i + 100:064x}",
            client.pubkey,
            node.pubkey,
            "ab" * 32,
            {"content": SECRET_TEXT},
            at,
        )
        await db_pool.execute(
            """INSERT INTO federation_jobs (job_id, role, peer, rfb_id, bid_id, award_id, capacity_token, price_msat,
                   privacy, status, receipt, created_at)
               VALUES ($1, 'requester', $2, 'r', 'b', $1, 't', 9, 1, 'done', $3, $4)""",
            f"job{i}",
            peer.pubkey,
            {"id": f"{i:064x}", "content": SECRET_TEXT},
            at,
        )
    async with running_router(database_url, admin_keys=frozenset({operator.pubkey})) as router:
        yield router, operator


async def pages(router: RunningRouter, operator: Keys, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    async with httpx.AsyncClient() as http:
        for _ in range(10):
            params = httpx.QueryParams({"limit": 2, **({"before": cursor} if cursor else {})})
            url = f"{router.url}{path}?{params}"
            response = await http.get(url, headers={"Authorization": auth_header(operator, "GET", url, nonce=True)})
            assert response.status_code == 200, response.text
            document = response.json()
            assert len(document[key]) <= 2 and SECRET_TEXT not in response.text
            items += document[key]
            cursor = document["next"]
            if cursor is None:
                return items
    raise AssertionError("pagination did not end")


async def test_metering_and_receipts_page_through_every_row_once_newest_first(
    listed: tuple[RunningRouter, Keys],
) -> None:
    router, operator = listed
    records = await pages(router, operator, "/admin/api/metering", "records")
    assert sorted(r["request_id"] for r in records) == [f"{i:064x}" for i in range(5)]
    times = [datetime.fromisoformat(r["created_at"]) for r in records]
    assert times == sorted(AT, reverse=True)
    assert set(records[0]) == {
        "request_id", "client", "node", "model", "input_tokens", "output_tokens", "wall_ms", "price_msat", "attempt",
        "created_at",
    }  # fmt: skip
    jobs = await pages(router, operator, "/admin/api/receipts", "jobs")
    assert sorted(j["job_id"] for j in jobs) == [f"job{i}" for i in range(5)]
    assert [j["job_id"] for j in jobs] == ["job4", "job3", "job2", "job1", "job0"] and all(
        j["receipt_id"] for j in jobs
    )


async def test_a_cursor_that_is_not_one_is_refused(listed: tuple[RunningRouter, Keys]) -> None:
    router, operator = listed
    async with httpx.AsyncClient() as http:
        for query in ("before=yesterday", "limit=0", "limit=201", "limit=x"):
            url = f"{router.url}/admin/api/metering?{query}"
            response = await http.get(url, headers={"Authorization": auth_header(operator, "GET", url, nonce=True)})
            assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request"), query


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout


async def test_the_receipts_command_prints_a_page_and_its_cursor(listed: tuple[RunningRouter, Keys]) -> None:
    router, operator = listed
    args = ("admin", "receipts", "--router", router.url, "--admin-key", operator.secret_hex, "--limit", "2")
    code, out = await asyncio.to_thread(run, *args)
    assert code == 0 and "federation jobs (2)" in out and "next page: --before" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out = await asyncio.to_thread(run, *args, "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["job4", "job3"]  # job3 and job2 tie: id order
