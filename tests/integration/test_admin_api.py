"""The admin API (runbooks/admin.md): NIP-98 by ROUTER_ADMIN_KEYS only, every bad signature refused, and changes
stored in Postgres, audited, and applied by every replica on one database without a restart."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from fedai.protocol.event import sign_event
from fedai.protocol.federation import RouterPrice
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from tests.support.fake_node import FakeNode, register
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app

SYNC_MS = 200
WITHIN_S = 10.0  # a change on one replica is seen by the other within this (sync every 0.2 s)


async def eventually(check: Callable[[], bool], within: float = WITHIN_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


class Admin:
    """Signed admin calls to one router."""

    def __init__(self, http: httpx.AsyncClient, router: RunningRouter, keys: Keys) -> None:
        self.http, self.router, self.keys = http, router, keys

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        url = self.router.url + path
        content = httpx.Request(method, url, json=body).content if body is not None else b""
        headers = {"Authorization": auth_header(self.keys, method, url, content)}
        if content:
            headers["Content-Type"] = "application/json"
        return await self.http.request(method, url, content=content, headers=headers)


@pytest.fixture
async def operator() -> Keys:
    return Keys.generate()


@pytest.fixture
async def pair(
    database_url: str, db_pool: asyncpg.Pool, operator: Keys
) -> AsyncIterator[tuple[RunningRouter, RunningRouter, FakeNode]]:
    """Two replicas (same key, same database) and one node registered with the first."""
    await reset_database(db_pool)
    keys = Keys.generate()
    admin = frozenset({operator.pubkey})
    async with (
        running_router(database_url, keys=keys, admin_keys=admin, admin_sync_ms=SYNC_MS) as a,
        running_router(database_url, keys=keys, admin_keys=admin, admin_sync_ms=SYNC_MS) as b,
    ):
        node = FakeNode()
        async with serve_app(node.app()) as url:
            node.endpoint = url
            assert (await register(a.url, a.pubkey, node.keys, node.descriptor())).status_code == 200
            await eventually(lambda: node.keys.pubkey in b.service.registry.nodes)
            yield a, b, node


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_every_call_without_a_valid_operator_signature_is_refused(
    pair: tuple[RunningRouter, RunningRouter, FakeNode], operator: Keys, db_pool: asyncpg.Pool
) -> None:
    a, _, node = pair
    url = f"{a.url}/admin/api/nodes/{node.keys.pubkey}/drain"
    stranger = Keys.generate()
    body = b'{"x": 1}'
    old = sign_event(operator, KIND_HTTP_AUTH, "", [["u", url], ["method", "POST"]], created_at=int(time.time()) - 600)
    forged = sign_event(operator, KIND_HTTP_AUTH, "", [["u", url], ["method", "POST"]]).to_json()
    forged = forged.replace(operator.pubkey.encode(), stranger.pubkey.encode())
    cases = {
        "missing": ({}, (401, "unauthorized")),
        "operator token": (a.admin, (401, "unauthorized")),
        "other key": ({"Authorization": auth_header(stranger, "POST", url)}, (403, "forbidden")),
        "other url": (
            {"Authorization": auth_header(operator, "POST", a.url + "/admin/api/nodes")},
            (401, "auth_url_mismatch"),
        ),
        "other method": ({"Authorization": auth_header(operator, "GET", url)}, (401, "auth_method_mismatch")),
        "other body": (
            {"Authorization": auth_header(operator, "POST", url, b'{"x": 2}')},
            (401, "auth_payload_mismatch"),
        ),
        "stale": ({"Authorization": "Nostr " + base64.b64encode(old.to_json()).decode()}, (401, "stale")),
        "forged": ({"Authorization": "Nostr " + base64.b64encode(forged).decode()}, (401, "invalid_auth")),
    }
    async with httpx.AsyncClient() as http:
        for name, (headers, expected) in cases.items():
            sent = body if name == "other body" else b""
            response = await http.post(url, headers=headers, content=sent)
            assert _code(response) == expected, name
            if expected[0] == 401:
                assert "Nostr" in response.headers["WWW-Authenticate"], name
        good = {"Authorization": auth_header(operator, "POST", url)}
        first = await http.post(url, headers=good)
        replayed = await http.post(url, headers=good)
        listing = await http.get(a.url + "/admin/api/audit")
    assert first.status_code == 200 and first.json()["drained"] is True
    assert _code(replayed) == (409, "replay")
    assert _code(listing) == (401, "unauthorized")
    # only the one valid call changed anything
    assert await db_pool.fetchval("SELECT count(*) FROM admin_audit") == 1


async def test_drain_and_ban_on_one_replica_hold_the_node_on_the_other(
    pair: tuple[RunningRouter, RunningRouter, FakeNode], operator: Keys, db_pool: asyncpg.Pool
) -> None:
    a, b, node = pair
    pubkey = node.keys.pubkey
    async with httpx.AsyncClient() as http:
        admin_a, admin_b = Admin(http, a, operator), Admin(http, b, operator)
        assert (await admin_a.call("POST", f"/admin/api/nodes/{pubkey}/drain")).status_code == 200
        assert a.service.registry.nodes[pubkey].held  # applied at once where it was made
        await eventually(lambda: b.service.registry.nodes[pubkey].held)
        explained = await http.get(b.url + "/route/explain?model=fake-model", headers=b.admin)
        assert [n["verdict"] for n in explained.json()["nodes"]] == ["held"]
        listed = (await admin_b.call("GET", "/admin/api/nodes")).json()["nodes"]
        assert [(n["pubkey"], n["drained"], n["banned"]) for n in listed] == [(pubkey, True, False)]

        assert (await admin_b.call("POST", f"/admin/api/nodes/{pubkey}/undrain")).status_code == 200
        await eventually(lambda: not a.service.registry.nodes[pubkey].held)
        assert (await admin_a.call("POST", f"/admin/api/nodes/{pubkey}/ban")).status_code == 200
        await eventually(lambda: pubkey in b.service.registry.banned)
    beat = await register(b.url, b.pubkey, node.keys, node.descriptor())
    assert _code(beat) == (403, "forbidden")
    assert b.service.registry.nodes[pubkey].held
    audit = await db_pool.fetch("SELECT actor, action, target, before, after FROM admin_audit ORDER BY id")
    assert [(r["actor"], r["action"], r["target"]) for r in audit] == [
        (operator.pubkey, "node.drain", pubkey),
        (operator.pubkey, "node.undrain", pubkey),
        (operator.pubkey, "node.ban", pubkey),
    ]
    assert audit[0]["before"] is None and audit[0]["after"] == {"drained": True, "banned": False}
    assert audit[2]["before"] == {"drained": False, "banned": False}


async def test_peer_rules_and_fees_reach_the_other_replica_and_override_the_environment(
    database_url: str, db_pool: asyncpg.Pool, operator: Keys
) -> None:
    await reset_database(db_pool)
    keys, peer, other = Keys.generate(), Keys.generate(), Keys.generate()
    admin = frozenset({operator.pubkey})
    env = {"keys": keys, "admin_keys": admin, "admin_sync_ms": SYNC_MS, "peer_blocklist": frozenset({other.pubkey})}
    async with (
        running_router(database_url, fee_base_msat=5, fee_ppm=10, **env) as a,
        running_router(database_url, fee_base_msat=5, fee_ppm=10, **env) as b,
        httpx.AsyncClient() as http,
    ):
        policy = b.service.federation.peers.policy
        assert policy.state(peer.pubkey) == "ok" and policy.state(other.pubkey) == "blocked"
        admin_a = Admin(http, a, operator)
        assert (await admin_a.call("POST", f"/admin/api/peers/{peer.pubkey}/block")).status_code == 200
        assert (await admin_a.call("POST", f"/admin/api/peers/{other.pubkey}/allow")).status_code == 200
        await eventually(lambda: policy.state(peer.pubkey) == "blocked" and policy.state(other.pubkey) == "ok")
        assert (await admin_a.call("POST", f"/admin/api/peers/{peer.pubkey}/mute")).status_code == 200
        await eventually(lambda: policy.state(peer.pubkey) == "muted")
        assert (await admin_a.call("POST", f"/admin/api/peers/{other.pubkey}/clear")).status_code == 200
        await eventually(lambda: policy.state(other.pubkey) == "blocked")  # the environment's rule again

        fees = await admin_a.call("POST", "/admin/api/fees", {"fee_ppm": 2500})
        assert fees.json()["fee_base_msat"] == 5 and fees.json()["fee_ppm"] == 2500
        await eventually(lambda: (b.service.fees.base_msat, b.service.fees.ppm) == (5, 2500))
        # the other replica's federation prices with it too: its price sheet for a node it has
        node = FakeNode(input_msat=1000, output_msat=2000, endpoint="http://127.0.0.1:9")
        assert (await register(b.url, b.pubkey, node.keys, node.descriptor())).status_code == 200
        await eventually(lambda: node.keys.pubkey in b.service.registry.nodes)
        sheets = [w.payload for w in b.service.federation.announcer.wanted(time.time())]
        prices = [(p.base_msat, p.models[0].input_msat) for p in sheets if isinstance(p, RouterPrice)]
        assert prices == [(5, 1003)]  # 1000 + 2500 ppm
        bad = await admin_a.call("POST", "/admin/api/fees", {"fee_ppm": 2_000_000})
        assert _code(bad) == (400, "invalid_request")
        await admin_a.call("POST", "/admin/api/fees", {"fee_ppm": None})
        await eventually(lambda: b.service.fees.ppm == 10)
        page = (await admin_a.call("GET", "/admin/api/audit?limit=2")).json()
        rest = (await admin_a.call("GET", f"/admin/api/audit?limit=10&before={page['next']}")).json()
    actions = [e["action"] for e in page["entries"] + rest["entries"]]
    assert actions == ["fee.set", "fee.set", "peer.clear", "peer.mute", "peer.allow", "peer.block"]
    assert rest["next"] is None


async def test_an_api_key_made_on_one_replica_works_on_the_other_until_revoked(
    pair: tuple[RunningRouter, RunningRouter, FakeNode], operator: Keys, db_pool: asyncpg.Pool
) -> None:
    a, b, _node = pair
    client = Keys.generate()
    async with httpx.AsyncClient() as http:
        admin_a = Admin(http, a, operator)
        made = (await admin_a.call("POST", "/admin/api/apikeys", {"client": client.pubkey, "label": "ci"})).json()
        key = made["key"]
        await eventually(lambda: len(b.service.api_keys) == 1)
        chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8}
        served = await http.post(b.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
        assert served.status_code == 200, served.text
        listed = (await admin_a.call("GET", "/admin/api/apikeys")).json()["api_keys"]
        assert [(k["id"], k["client"], k["revoked_at"]) for k in listed] == [(made["id"], client.pubkey, None)]
        records = (await admin_a.call("GET", "/admin/api/metering?limit=5")).json()
        assert [r["client"] for r in records["records"]] == [client.pubkey]
        assert "hi there" not in str(records) and "event" not in records["records"][0]

        assert (await admin_a.call("POST", f"/admin/api/apikeys/{made['id']}/revoke")).status_code == 200
        await eventually(lambda: len(b.service.api_keys) == 0)
        refused = await http.post(b.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
        await asyncio.sleep(1.1)  # the same call in the same second is the same NIP-98 event: a replay
        again = await admin_a.call("POST", f"/admin/api/apikeys/{made['id']}/revoke")
    assert refused.status_code == 401
    assert _code(again) == (404, "not_found")
    audit = await db_pool.fetch("SELECT before, after FROM admin_audit")
    assert key not in str([dict(r) for r in audit])  # the key is shown once, never stored or audited
    stored = await db_pool.fetchval("SELECT count(*) FROM admin_api_keys WHERE sha256 <> $1", key)
    assert stored == 1
