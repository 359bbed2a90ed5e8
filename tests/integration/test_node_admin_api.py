"""The node's admin API (runbooks/admin.md#node): a real node (mock runner) on loopback, heartbeating to a real
router, both on real Postgres. NIP-98 by NODE_ADMIN_KEYS only; every change audited, applied at once (the router
hears it in the next heartbeat, sent at once) and kept across a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import Pricing, price_msat
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from fedai.sdk import AsyncClient
from fedai.service.config import ConfigError, Env
from fedai_node.app import create_app
from fedai_node.config import NodeSettings, from_env
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import free_port, serve_app
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.integration

MODEL = "fedai-mock-1"


@dataclass
class Stand:
    router: RunningRouter
    node_keys: Keys
    node_url: str
    operator: Keys
    http: httpx.AsyncClient

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, keys: Keys | None = None
    ) -> httpx.Response:
        url = self.node_url + path
        content = json.dumps(body).encode() if body is not None else b""
        headers = {"Authorization": auth_header(keys or self.operator, method, url, content)}
        return await self.http.request(method, url, content=content, headers=headers)

    async def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.call(method, path, body)
        assert response.status_code == 200, response.text
        return response.json()

    def registered(self) -> Any:
        return self.router.service.registry.nodes.get(self.node_keys.pubkey)


def node_settings(router: RunningRouter, keys: Keys, port: int, database_url: str, **over: Any) -> NodeSettings:
    fields: dict[str, Any] = dict(
        keys=keys,
        router_pubkeys=frozenset({router.pubkey}),
        runner="mock",
        port=port,
        endpoint=f"http://127.0.0.1:{port}",
        router_endpoints=(router.url,),
        heartbeat_ms=300,
        db_url=database_url,
    )
    fields.update(over)
    return NodeSettings(**fields)


@asynccontextmanager
async def running_node(settings: NodeSettings) -> AsyncIterator[str]:
    async with serve_app(create_app(settings), port=settings.port) as url:
        yield url


@pytest.fixture
async def stand(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Stand]:
    await reset_database(db_pool)
    operator, node_keys, port = Keys.generate(), Keys.generate(), free_port()
    async with running_router(database_url) as router:
        settings = node_settings(router, node_keys, port, database_url, admin_keys=frozenset({operator.pubkey}))
        async with running_node(settings) as url, httpx.AsyncClient(timeout=10) as http:
            stand = Stand(router, node_keys, url, operator, http)
            await eventually(lambda: stand.registered() is not None, 10, "the router has the node")
            yield stand


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def audit_count(db_pool: asyncpg.Pool) -> int:
    return int(await db_pool.fetchval("SELECT count(*) FROM node_admin_audit"))


async def test_every_call_without_a_valid_admin_signature_is_refused(stand: Stand, db_pool: asyncpg.Pool) -> None:
    url = stand.node_url + "/admin/api/drain"
    op, stranger = stand.operator, Keys.generate()
    old = sign_event(op, KIND_HTTP_AUTH, "", [["u", url], ["method", "POST"]], created_at=int(time.time()) - 600)
    cases = {
        "missing": ({}, (401, "unauthorized")),
        "bearer": ({"Authorization": "Bearer fo-something"}, (401, "unauthorized")),
        "other key": ({"Authorization": auth_header(stranger, "POST", url)}, (403, "forbidden")),
        "other url": (
            {"Authorization": auth_header(op, "POST", stand.node_url + "/admin/api/resume")},
            (401, "auth_url_mismatch"),
        ),
        "other host": (
            {"Authorization": auth_header(op, "POST", "http://node.example/admin/api/drain")},
            (401, "auth_url_mismatch"),
        ),
        "other method": ({"Authorization": auth_header(op, "GET", url)}, (401, "auth_method_mismatch")),
        "other body": ({"Authorization": auth_header(op, "POST", url, b"{}")}, (401, "auth_payload_mismatch")),
        "stale": ({"Authorization": "Nostr " + base64.b64encode(old.to_json()).decode()}, (401, "stale")),
        "not base64": ({"Authorization": "Nostr %%%"}, (401, "invalid_auth")),
    }
    for name, (headers, expected) in cases.items():
        response = await stand.http.post(url, headers=headers)
        assert code(response) == expected, name
        if expected[0] == 401:
            assert response.headers["WWW-Authenticate"] == "Nostr", name
    good = {"Authorization": auth_header(op, "POST", url)}
    first = await stand.http.post(url, headers=good)
    replayed = await stand.http.post(url, headers=good)
    assert first.status_code == 200 and first.json()["draining"] is True
    assert code(replayed) == (409, "replay")
    assert await audit_count(db_pool) == 1  # only the one valid call changed anything


async def test_status_drain_and_resume_reach_the_router_at_once(stand: Stand, db_pool: asyncpg.Pool) -> None:
    status = await stand.ok("GET", "/admin/api/status")
    assert status["pubkey"] == stand.node_keys.pubkey and status["runner"] == "mock" and status["runner_ok"] is True
    assert status["models"] == [{"id": MODEL, "pricing": {"input_msat": 1000, "output_msat": 2000}}]
    assert status["draining"] is False and status["accepted_routers"] == [stand.router.pubkey]
    [router] = status["routers"]
    assert router["endpoint"] == stand.router.url and router["pubkey"] == stand.router.pubkey
    assert router["last_result"] == "ok"

    drained = await stand.ok("POST", "/admin/api/drain")
    assert drained == {"draining": True, "in_flight": 0}
    assert stand.registered().descriptor.draining is True  # told before the answer, not at the next beat
    refused = await stand.http.post(stand.node_url + "/infer", content=b"{}")
    assert code(refused) == (503, "unavailable")
    assert (await stand.ok("GET", "/admin/api/status"))["draining"] is True  # the admin API still answers

    assert (await stand.ok("POST", "/admin/api/resume"))["draining"] is False
    assert stand.registered().descriptor.draining is False
    audit = await stand.ok("GET", "/admin/api/audit")
    assert [(e["action"], e["actor"], e["after"]) for e in audit["entries"]] == [
        ("node.resume", stand.operator.pubkey, {"drained": False}),
        ("node.drain", stand.operator.pubkey, {"drained": True}),
    ]


async def test_prices_are_checked_applied_to_heartbeats_and_kept(stand: Stand, db_pool: asyncpg.Pool) -> None:
    bad: dict[str, dict[str, Any]] = {
        "negative": {"input_msat": -1, "output_msat": 5},
        "too large": {"input_msat": 10**13, "output_msat": 5},
        "not an integer": {"input_msat": "5", "output_msat": 5},
        "a bool": {"input_msat": True, "output_msat": 5},
        "one missing": {"input_msat": 5},
        "one null": {"input_msat": None, "output_msat": 5},
        "unknown field": {"input_msat": 5, "output_msat": 5, "x": 1},
    }
    for name, body in bad.items():
        assert code(await stand.call("POST", f"/admin/api/prices/{MODEL}", body)) == (400, "invalid_request"), name
    unknown = await stand.call("POST", "/admin/api/prices/no-such-model", {"input_msat": 1, "output_msat": 1})
    assert code(unknown) == (404, "not_found")
    assert await audit_count(db_pool) == 0

    changed = await stand.ok("POST", f"/admin/api/prices/{MODEL}", {"input_msat": 3000, "output_msat": 4000})
    assert changed["pricing"] == {"input_msat": 3000, "output_msat": 4000} and changed["routers_told"] == ["ok"]
    pricing = stand.registered().models[MODEL].pricing
    assert (pricing.input_msat, pricing.output_msat) == (3000, 4000)  # the router heard it at once
    # a request served now is charged the new price, and the router's check of it (at most the advertised) passes
    async with AsyncClient(stand.router.url, Keys.generate(), router_pubkey=stand.router.pubkey) as client:
        chain = await client.infer(MODEL, "a priced prompt", max_tokens=4)
    record = chain.record
    assert chain.node == stand.node_keys.pubkey
    assert record.price_msat == price_msat(
        Pricing(input_msat=3000, output_msat=4000), record.input_tokens, record.output_tokens
    )
    assert record.price_msat > price_msat(
        Pricing(input_msat=1000, output_msat=2000), record.input_tokens, record.output_tokens
    )
    prices = await stand.ok("GET", "/admin/api/prices")
    assert prices["env"] == {"input_msat": 1000, "output_msat": 2000}
    assert prices["set"] == {MODEL: {"input_msat": 3000, "output_msat": 4000}}

    reset = await stand.ok("POST", f"/admin/api/prices/{MODEL}", {"input_msat": None, "output_msat": None})
    assert reset["pricing"] == {"input_msat": 1000, "output_msat": 2000}
    assert stand.registered().models[MODEL].pricing.input_msat == 1000
    rows = await db_pool.fetch("SELECT action, target, before, after FROM node_admin_audit ORDER BY id")
    assert [(r["action"], r["target"], r["before"], r["after"]) for r in rows] == [
        ("price.set", MODEL, None, {"input_msat": 3000, "output_msat": 4000}),
        ("price.reset", MODEL, {"input_msat": 3000, "output_msat": 4000}, None),
    ]


async def test_router_rules_earnings_and_audit_pages(stand: Stand, db_pool: asyncpg.Pool) -> None:
    other, router = Keys.generate().pubkey, stand.router.pubkey
    assert (await stand.ok("POST", f"/admin/api/routers/{other}/allow"))["accepted"] is True
    assert code(await stand.call("POST", f"/admin/api/routers/{other}/trust")) == (404, "not_found")
    assert code(await stand.call("POST", "/admin/api/routers/npub1nothing/allow")) == (400, "invalid_request")
    blocked = await stand.ok("POST", f"/admin/api/routers/{router}/block")
    assert blocked == {"pubkey": router, "rule": "block", "accepted": False}
    listed = await stand.ok("GET", "/admin/api/routers")
    assert listed["configured"] == [router] and listed["accepted"] == [other]
    assert listed["rules"] == {other: "allow", router: "block"}
    # the blocked router's key is no longer trusted: the heartbeat to it stops (logged as untrusted)
    await eventually_async(
        lambda: _last_result(stand, "untrusted_router"), within=10, what="the heartbeat refuses the blocked router"
    )
    assert (await stand.ok("POST", f"/admin/api/routers/{router}/clear"))["accepted"] is True

    empty = await stand.ok("GET", "/admin/api/earnings")
    assert empty["earned_msat"] == 0 and empty["claims"]["consumed"] == {"count": 0, "msat": 0}
    await db_pool.execute(
        """INSERT INTO payment_claims (payment_hash, request_id, router, client, amount_msat, expires_at, state,
                                       claimed_by, claimed_at)
           VALUES ($1, 'r', $2, 'c', 5000, now() + interval '1 hour', 'consumed', 'x', now())""",
        "ab" * 32,
        router,
    )
    earned = await stand.ok("GET", "/admin/api/earnings")
    assert earned["claims"]["consumed"] == {"count": 1, "msat": 5000} and earned["earned_msat"] == 5000
    assert "ab" * 32 not in json.dumps(earned)

    first = await stand.ok("GET", "/admin/api/audit?limit=2")
    assert [e["action"] for e in first["entries"]] == ["router.clear", "router.block"]
    rest = await stand.ok("GET", f"/admin/api/audit?limit=2&before={first['next']}")
    assert [e["action"] for e in rest["entries"]] == ["router.allow"] and rest["next"] is None
    assert code(await stand.call("GET", "/admin/api/audit?limit=0")) == (400, "invalid_request")
    assert code(await stand.call("GET", "/admin/api/audit?before=x")) == (400, "invalid_request")


async def _last_result(stand: Stand, result: str) -> bool:
    status = await stand.ok("GET", "/admin/api/status")
    return bool(status["routers"][0]["last_result"] == result)


async def test_changes_outlive_a_restart_and_the_api_is_off_without_keys(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    operator, node_keys, port = Keys.generate(), Keys.generate(), free_port()
    admin = frozenset({operator.pubkey})
    async with running_router(database_url) as router, httpx.AsyncClient(timeout=10) as http:
        settings = node_settings(router, node_keys, port, database_url, admin_keys=admin)
        async with running_node(settings) as url:
            stand = Stand(router, node_keys, url, operator, http)
            await eventually(lambda: stand.registered() is not None, 10, "the router has the node")
            await stand.ok("POST", f"/admin/api/prices/{MODEL}", {"input_msat": 7, "output_msat": 8})
            await stand.ok("POST", "/admin/api/drain")
        async with running_node(settings) as url:
            stand = Stand(router, node_keys, url, operator, http)
            status = await stand.ok("GET", "/admin/api/status")
            assert status["draining"] is True
            assert status["models"][0]["pricing"] == {"input_msat": 7, "output_msat": 8}
            await eventually(
                lambda: stand.registered().models[MODEL].pricing.input_msat == 7, 10, "the router has the price"
            )
        off = node_settings(router, node_keys, port, database_url)  # no NODE_ADMIN_KEYS
        async with running_node(off) as url:
            stand = Stand(router, node_keys, url, operator, http)
            assert (await stand.call("GET", "/admin/api/status")).status_code == 404


def test_node_admin_keys_need_a_database() -> None:
    base = {"NODE_PRIVATE_KEY": Keys.generate().secret_hex, "ROUTER_PUBLIC_KEY": Keys.generate().pubkey}
    base["NODE_RUNNER"] = "mock"
    admin = Keys.generate().pubkey
    with pytest.raises(ConfigError, match="NODE_ADMIN_KEYS needs NODE_DB_URL"):
        from_env(Env({**base, "NODE_ADMIN_KEYS": admin}))
    with pytest.raises(ConfigError, match="NODE_ADMIN_KEYS"):
        from_env(Env({**base, "NODE_ADMIN_KEYS": "not-a-key", "NODE_DB_URL": "postgresql://x/y"}))
    settings = from_env(Env({**base, "NODE_ADMIN_KEYS": admin, "NODE_DB_URL": "postgresql://x/y"}))
    assert settings.admin_keys == frozenset({admin})


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


async def test_the_node_admin_commands(stand: Stand) -> None:
    common = ("--node", stand.node_url, "--admin-key", stand.operator.secret_hex)

    async def fedai(*args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(run, "node", "admin", *args)

    code_, out, _ = await fedai("status", *common)
    assert code_ == 0 and "serving" in out and MODEL in out and "1000 in / 2000 out" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code_, out, _ = await fedai("price", MODEL, "--input-msat", "5", "--output-msat", "6", *common)
    assert code_ == 0 and "5 in / 6 out" in out
    assert stand.registered().models[MODEL].pricing.output_msat == 6
    code_, _, err = await fedai("price", MODEL, "--input-msat", "5", *common)
    assert code_ == 2 and "--reset" in err
    code_, out, _ = await fedai("price", MODEL, "--reset", *common, "--json")
    assert code_ == 0 and json.loads(out)["pricing"] == {"input_msat": 1000, "output_msat": 2000}
    code_, out, _ = await fedai("drain", *common, "--json")
    assert code_ == 0 and json.loads(out)["draining"] is True and stand.registered().descriptor.draining
    code_, out, _ = await fedai("resume", *common)
    assert code_ == 0 and "serving" in out and not stand.registered().descriptor.draining
    other = Keys.generate()
    code_, out, _ = await fedai("router", "allow", other.npub, *common)
    assert code_ == 0 and "rule allow, accepted" in out
    for table in ("routers", "prices", "earnings", "audit"):
        code_, out, _ = await fedai(table, *common)
        assert code_ == 0 and max(len(line) for line in out.splitlines()) <= 80, table
    code_, out, _ = await fedai("audit", *common, "--json")
    actions = [e["action"] for e in json.loads(out)["entries"]]
    assert actions == ["router.allow", "node.resume", "node.drain", "price.reset", "price.set"]

    stranger = ("--node", stand.node_url, "--admin-key", other.secret_hex)
    code_, _, err = await fedai("drain", *stranger)
    assert code_ == 1 and "error forbidden" in err and stand.registered().descriptor.draining is False


async def test_a_database_failure_is_a_typed_503_and_changes_nothing(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    operator, node_keys, port = Keys.generate(), Keys.generate(), free_port()
    async with running_router(database_url) as router, httpx.AsyncClient(timeout=10) as http:
        settings = node_settings(router, node_keys, port, database_url, admin_keys=frozenset({operator.pubkey}))
        app = create_app(settings)
        async with serve_app(app, port=port) as url:
            stand = Stand(router, node_keys, url, operator, http)
            await eventually(lambda: stand.registered() is not None, 10, "the router has the node")
            app.state.node.lifecycle.db.terminate()  # the node's database is gone
            refused = await stand.call("POST", "/admin/api/drain")
            assert code(refused) == (503, "unavailable")
            assert app.state.node.drain.draining is False and stand.registered().descriptor.draining is False
    assert await audit_count(db_pool) == 0
