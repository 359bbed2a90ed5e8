"""What a real router shows to whom: a bounded public /status summary for anyone; node endpoints, relay URLs,
peers, routing detail and metrics only to operators (token or NIP-98 operator key); credentials never."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import auth_header
from tests.support.fake_node import FakeNode, register
from tests.support.router import ADMIN_TOKEN, RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

SECRET = "sekrit-relay-token"
OPS = ("/route/explain?model=fake-model", "/federation/peers", "/metrics")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def exposed(
    database_url: str, db_pool: asyncpg.Pool, own_relay_url: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[RunningRouter, FakeNode]]:
    """A router whose relay URL carries credentials (userinfo and a query token), with one registered node."""
    await reset_database(db_pool)
    caplog.set_level(logging.DEBUG, logger="fedai")
    parts = urlsplit(own_relay_url)
    relay_with_token = f"{parts.scheme}://operator:{SECRET}@{parts.netloc}/?token={SECRET}"
    async with running_router(database_url, relays=[relay_with_token]) as router:
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            yield router, node


async def test_the_public_status_is_a_summary_without_endpoints_relays_or_credentials(
    exposed: tuple[RunningRouter, FakeNode], own_relay_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    router, node = exposed
    relay_host = urlsplit(own_relay_url).netloc
    async with httpx.AsyncClient() as http:

        async def counted() -> bool:
            document = (await http.get(router.url + "/status")).json()
            return bool(document["nodes"]["fresh"] == 1 and document["relays"]["connected"] == 1)

        await eventually(counted)
        public = await http.get(router.url + "/status")
        operator = await http.get(router.url + "/status", headers=router.admin)
        wrong = await http.get(router.url + "/status", headers={"Authorization": "Bearer not-the-token"})
    document = public.json()
    assert document["view"] == "public" and document["pubkey"] == router.pubkey
    assert document["backpressure"] in {"NORMAL", "BUSY", "SATURATED"}
    assert document["models"] == 1 and document["peers"] == 0
    assert len(public.content) < 1024
    for hidden in (node.endpoint, node.keys.pubkey, relay_host, SECRET, "operator:"):
        assert hidden not in public.text
    # the operator view has the detail, still without the relay's credentials
    detail = operator.json()
    assert detail["view"] == "operator" and detail["nodes"][0]["endpoint"] == node.endpoint
    assert list(detail["relays"]) == [f"ws://***@{relay_host}/?***"]
    assert SECRET not in operator.text
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "unauthorized")
    assert "Bearer" in wrong.headers["www-authenticate"]
    # logs name the relay, never its credentials
    logged = "\n".join(r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase))  # type: ignore[arg-type]
    assert f"relay ws://***@{relay_host}/?***: connected" in logged
    assert SECRET not in logged


async def test_ops_views_and_metrics_need_operator_credentials(exposed: tuple[RunningRouter, FakeNode]) -> None:
    router, _ = exposed
    async with httpx.AsyncClient() as http:
        for path in OPS:
            anonymous = await http.get(router.url + path)
            assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized"), path
            assert "fedai-operator" in anonymous.headers["www-authenticate"]
            allowed = await http.get(router.url + path, headers=router.admin)
            assert allowed.status_code == 200, (path, allowed.text)
        metrics = await http.get(router.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert "fedai_router_requests_total" in metrics.text


async def test_metrics_can_be_made_public(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, metrics_public=True) as router, httpx.AsyncClient() as http:
        metrics = await http.get(router.url + "/metrics")
        explain = await http.get(router.url + "/route/explain?model=x")
    assert metrics.status_code == 200 and "fedai_router_requests_total" in metrics.text
    assert explain.status_code == 401  # only /metrics is opened


async def test_a_nip98_operator_key_opens_the_operator_view(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    operator, stranger = Keys.generate(), Keys.generate()
    async with (
        running_router(database_url, admin_keys=frozenset({operator.pubkey})) as router,
        httpx.AsyncClient() as http,
    ):
        url = router.url + "/status"
        signed = {"Authorization": auth_header(operator, "GET", url)}
        first = await http.get(url, headers=signed)
        replayed = await http.get(url, headers=signed)
        other = await http.get(url, headers={"Authorization": auth_header(stranger, "GET", url)})
        metrics = await http.get(
            router.url + "/metrics", headers={"Authorization": auth_header(operator, "GET", router.url + "/metrics")}
        )
        for_status = await http.get(
            router.url + "/metrics", headers={"Authorization": auth_header(operator, "GET", url)}
        )
    assert first.status_code == 200 and first.json()["view"] == "operator"
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (409, "replay")
    assert (other.status_code, other.json()["error"]["code"]) == (403, "forbidden")
    assert metrics.status_code == 200
    assert (for_status.status_code, for_status.json()["error"]["code"]) == (401, "auth_url_mismatch")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


async def test_the_cli_shows_the_public_summary_or_the_operator_view(exposed: tuple[RunningRouter, FakeNode]) -> None:
    router, node = exposed
    public_code, public_out = await asyncio.to_thread(_cli, "status", "--router", router.url)
    explain_code, explain_out = await asyncio.to_thread(
        _cli, "route", "explain", "--router", router.url, "-m", "fake-model"
    )
    operator = ("--admin-token", ADMIN_TOKEN)
    full_code, full_out = await asyncio.to_thread(_cli, "status", "--router", router.url, "--wide", *operator)
    routed_code, _ = await asyncio.to_thread(
        _cli, "route", "explain", "--router", router.url, "-m", "fake-model", *operator
    )
    assert (
        public_code == 0 and "public summary" in public_out and node.endpoint.removeprefix("http://") not in public_out
    )
    assert explain_code == 1 and "--admin-token" in explain_out
    assert full_code == 0 and node.endpoint.removeprefix("http://") in full_out and SECRET not in full_out
    assert routed_code == 0
