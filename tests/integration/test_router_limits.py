"""Limits a real router applies before any work: a budget per source address on every route (X-Forwarded-For
believed only from trusted proxies), and JSON nested too deep refused with a typed 400 wherever it arrives."""

from __future__ import annotations

import hashlib
import ipaddress
import json

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.nip98 import auth_header
from tests.support.fake_node import FakeNode, register
from tests.support.router import reset_database, running_router

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000 + b"]" * 100_000
SHALLOWER = b"[" * 4_000 + b"]" * 4_000  # still far past the depth bound, within the heartbeat's size cap
API_KEY = "fk-limits-test-key"
API_KEYS = {hashlib.sha256(API_KEY.encode()).hexdigest(): Keys.generate().pubkey}


def xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_every_route_is_charged_to_the_peer_address_whatever_it_forwards(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, addr_rate_limit_max=3) as router, httpx.AsyncClient() as http:
        # a spoofed X-Forwarded-For from an untrusted peer buys no fresh budget
        for i in range(3):
            assert (await http.get(router.url + "/health", headers=xff(f"203.0.113.{i}"))).status_code == 200
        refused = {
            "health": await http.get(router.url + "/health", headers=xff("198.51.100.1")),
            "status": await http.get(router.url + "/status"),
            "metrics": await http.get(router.url + "/metrics", headers=router.admin),
            "infer": await http.post(router.url + "/infer", content=b"{}"),
            "openai": await http.get(router.url + "/v1/models"),
        }
    for route, resp in refused.items():
        assert resp.status_code == 429, route
        assert int(resp.headers["retry-after"]) >= 1, route
        assert resp.json()["error"]["code"] == "rate_limited", route
    assert refused["openai"].json()["error"]["type"] == "rate_limit_error"  # OpenAI's shape under /v1/


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    async with (
        running_router(database_url, addr_rate_limit_max=2, trusted_proxies=loopback) as router,
        httpx.AsyncClient() as http,
    ):

        async def health(forwarded: str) -> int:
            return (await http.get(router.url + "/health", headers=xff(forwarded))).status_code

        assert [await health("203.0.113.5") for _ in range(3)] == [200, 200, 429]
        assert await health("203.0.113.6") == 200  # another client behind the proxy
        # the client's own left-hand entries are ignored: the right-most untrusted address pays
        assert await health("198.51.100.77, 203.0.113.5") == 429
        assert await health("198.51.100.77, 203.0.113.7") == 200
        # a chain of trusted proxies is skipped
        assert await health("203.0.113.6, 127.0.0.9") == 200
        assert await health("203.0.113.6") == 429


async def test_deep_json_is_a_typed_400_everywhere_and_the_router_keeps_serving(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    client = Keys.generate()
    async with running_router(database_url, api_keys=API_KEYS) as router, httpx.AsyncClient() as http:
        deep_payload = '{"model": "m", "prompt": "x", "max_tokens": 1, "extra": ' + DEEP.decode() + "}"
        in_content = sign_event(client, Kind.INFER_REQUEST, deep_payload, [["p", router.pubkey]])
        in_tags = json.loads(seal(client, Kind.INFER_REQUEST, "{}", to=router.pubkey).to_json())
        raw_tags = json.dumps(in_tags).replace('"tags": [', '"tags": [' + DEEP.decode() + ", ", 1).encode()
        chat = router.url + "/v1/chat/completions"
        answers = {
            "infer": await http.post(router.url + "/infer", content=DEEP),
            "infer-tags": await http.post(router.url + "/infer", content=raw_tags),
            "register": await http.post(router.url + "/register-node", content=SHALLOWER),
            "openai-key": await http.post(chat, content=DEEP, headers={"Authorization": f"Bearer {API_KEY}"}),
            "openai-nip98": await http.post(
                chat, content=DEEP, headers={"Authorization": auth_header(client, "POST", chat, DEEP)}
            ),
        }
        content = await http.post(router.url + "/infer", content=in_content.to_json())
        still = await http.get(router.url + "/health")
    for route, resp in answers.items():
        assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_json"), route
    assert (content.status_code, content.json()["error"]["code"]) == (400, "invalid_event")
    assert "nested" in content.json()["error"]["message"], content.text
    assert still.status_code == 200


async def test_a_nul_character_is_a_typed_400_and_nothing_is_stored(database_url: str, db_pool: asyncpg.Pool) -> None:
    """PostgreSQL cannot store U+0000: without the guard, these reached a text/jsonb write and answered 500."""
    await reset_database(db_pool)
    node = FakeNode()
    node.model = "nul\x00model"
    async with running_router(database_url, api_keys=API_KEYS) as router, httpx.AsyncClient() as http:
        heartbeat = await register(router.url, router.pubkey, node.keys, node.descriptor())
        chat = await http.post(
            router.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi\x00"}]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert (heartbeat.status_code, heartbeat.json()["error"]["code"]) == (400, "invalid_event")
    assert (chat.status_code, chat.json()["error"]["code"]) == (400, "invalid_json")
    assert await db_pool.fetchval("SELECT count(*) FROM nodes") == 0
