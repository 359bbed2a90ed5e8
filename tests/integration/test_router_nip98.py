"""NIP-98 against a real router: an id stays claimed as long as its window accepts it (also after the nonce
prune), a header captured by one router is refused by another, and NIP-98 needs ROUTER_PUBLIC_URL."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from tests.support import database
from tests.support.fake_node import FakeNode, register
from tests.support.router import reset_database, running_router
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

API_KEY = "fk-nip98-test-key"
API_CLIENT = Keys.generate()
API_KEYS = {hashlib.sha256(API_KEY.encode()).hexdigest(): API_CLIENT.pubkey}


@pytest.fixture(scope="module")
async def other_database_url() -> AsyncIterator[str]:
    """A second database: the second router has a replay store of its own, as an unrelated router would."""
    async with database.test_database() as dsn:
        yield dsn


def _header(keys: Keys, url: str, body: bytes, created_at: int) -> str:
    tags = [["u", url], ["method", "POST"], ["payload", hashlib.sha256(body).hexdigest()]]
    event = sign_event(keys, KIND_HTTP_AUTH, "", tags, created_at=created_at)
    return "Nostr " + base64.b64encode(event.to_json()).decode()


async def test_a_header_inside_a_wide_window_stays_refused_after_the_nonce_prune(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    async with running_router(database_url, nip98_window_s=600, clock_skew_s=60) as router:
        node = FakeNode()
        async with serve_app(node.app()) as node_url:
            node.endpoint = node_url
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            url = router.url + "/v1/chat/completions"
            message = {"role": "user", "content": "x"}
            body = json.dumps({"model": "fake-model", "messages": [message], "max_tokens": 4}).encode()
            created_at = int(time.time()) - 300  # old for the clock skew, fresh for the 600 s NIP-98 window
            headers = {"Authorization": _header(Keys.generate(), url, body, created_at)}
            async with httpx.AsyncClient() as http:
                first = await http.post(url, content=body, headers=headers)
                assert first.status_code == 200, first.text
                # both replay memories forget every id whose retention has passed
                assert await router.service.replay.prune() >= 0
                router.service.recent.prune()
                again = await http.post(url, content=body, headers=headers)
            assert (again.status_code, again.json()["error"]["code"]) == (409, "replay")
            assert node.calls == 1
            kept = await db_pool.fetchval("SELECT max(extract(epoch FROM retain_until)) FROM nonces")
            assert kept >= created_at + 600


async def test_a_header_captured_by_one_router_is_refused_by_another(
    database_url: str, other_database_url: str, db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await reset_database(db_pool)
    caplog.set_level(logging.WARNING, logger="fedai.router")
    async with (
        running_router(database_url, api_keys=API_KEYS) as a,
        running_router(other_database_url, api_keys=API_KEYS) as b,
        running_router(other_database_url, api_keys=API_KEYS, public_url=None) as open_host,
    ):
        path = "/v1/chains/" + "0" * 64
        captured = {"Authorization": auth_header(Keys.generate(), "GET", a.url + path)}
        a_host = a.url.removeprefix("http://")
        async with httpx.AsyncClient() as http:
            to_b = await http.get(b.url + path, headers=captured)
            # without ROUTER_PUBLIC_URL the URL used to come from the Host header, which the attacker picks
            to_open = await http.get(open_host.url + path, headers={**captured, "Host": a_host})
            with_key = await http.get(open_host.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
            at_a = await http.get(a.url + path, headers=captured)
    assert (to_b.status_code, to_b.json()["error"]["code"]) == (401, "auth_url_mismatch")
    assert (to_open.status_code, to_open.json()["error"]["code"]) == (401, "auth_not_configured")
    assert "ROUTER_PUBLIC_URL" in to_open.json()["error"]["message"]
    for refused in (to_b, to_open):
        assert "Nostr" in refused.headers["www-authenticate"]
    # API keys still work without a public URL, and the captured header was valid where it was made for
    assert (with_key.status_code, with_key.json()["error"]["code"]) == (404, "not_found")
    assert (at_a.status_code, at_a.json()["error"]["code"]) == (404, "not_found")
    assert "ROUTER_PUBLIC_URL is not set" in caplog.text


async def test_every_nip98_failure_is_a_401_with_a_challenge(database_url: str, db_pool: asyncpg.Pool) -> None:
    await reset_database(db_pool)
    async with running_router(database_url) as router:
        url = router.url + "/v1/completions"
        body = b'{"model": "m", "prompt": "x"}'
        keys = Keys.generate()
        cases = {
            "auth_url_mismatch": _header(keys, router.url + "/v1/chat/completions", body, int(time.time())),
            "stale": _header(keys, url, body, int(time.time()) - 3600),
            "invalid_auth": "Nostr " + base64.b64encode(sign_event(keys, 1, "").to_json()).decode(),
            "auth_method_mismatch": auth_header(keys, "GET", url),
            "auth_payload_mismatch": auth_header(keys, "POST", url, b"another body"),
        }
        async with httpx.AsyncClient() as http:
            for code, header in cases.items():
                resp = await http.post(url, content=body, headers={"Authorization": header})
                assert (resp.status_code, resp.json()["error"]["code"]) == (401, code), code
                assert resp.headers["www-authenticate"].startswith("Nostr")
