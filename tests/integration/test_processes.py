"""End to end with real processes: replay protection across two router processes on one database, and
no prompt, output or secret in any service's logs."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import httpx
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from tests.support.router import reset_database
from tests.support.services import network, wait_until_node_listed


async def test_envelope_accepted_by_one_router_process_is_refused_by_the_other(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    router_keys = Keys.generate()  # replicas of one router share its key and its database
    with network(tmp_path) as net:
        a = net.router("router-a", router_keys, database_url)
        b = net.router("router-b", router_keys, database_url)
        node = net.node("node", a)
        wait_until_node_listed(a, node)
        wait_until_node_listed(b, node)  # b learned the node from the shared database
        client = Keys.generate()
        event = seal(
            client,
            Kind.INFER_REQUEST,
            InferenceRequest(model="fedai-mock-1", prompt="hi", max_tokens=8),
            to=router_keys.pubkey,
            nonce=True,
        )
        async with httpx.AsyncClient(timeout=30) as http:
            first = await http.post(a.url + "/infer", content=event.to_json())
            second = await http.post(b.url + "/infer", content=event.to_json())
            third = await http.post(a.url + "/infer", content=event.to_json())
        assert first.status_code == 200, first.text
        assert (second.status_code, second.json()["error"]["code"]) == (409, "replay")
        assert (third.status_code, third.json()["error"]["code"]) == (409, "replay")
        # a heartbeat accepted by one replica is refused by the other too
        beat = seal(
            Keys.generate(),
            Kind.NODE_HEARTBEAT,
            '{"endpoint":"http://127.0.0.1:9","models":[{"id":"m",'
            '"context_window":8,"max_tokens":8,"pricing":{"input_msat":1,"output_msat":1}}],'
            '"capacity":{"max_concurrent":1}}',
            to=router_keys.pubkey,
            nonce=True,
        )
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.post(b.url + "/register-node", content=beat.to_json())).status_code == 200
            again = await http.post(a.url + "/register-node", content=beat.to_json())
        assert (again.status_code, again.json()["error"]["code"]) == (409, "replay")
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 1


async def test_logs_never_contain_prompts_outputs_or_secrets(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool
) -> None:
    await reset_database(db_pool)
    router_keys = Keys.generate()
    prompt = f"confidential-prompt-{secrets.token_hex(8)}"
    with network(tmp_path) as net:
        router = net.router("router", router_keys, database_url, ROUTER_LOG_LEVEL="DEBUG")
        node = net.node("node", router, NODE_LOG_LEVEL="DEBUG")
        wait_until_node_listed(router, node)
        client_keys = Keys.generate()
        async with AsyncClient(router.url, client_keys, router_pubkey=router_keys.pubkey) as client:
            chain = await client.infer("fedai-mock-1", prompt, max_tokens=24)
            chat = await client.infer(
                "fedai-mock-1", messages=[{"role": "user", "content": prompt + "-chat"}], max_tokens=24
            )
            with pytest.raises(FedaiError) as refused:
                await client.infer("no-such-model", prompt + "-refused", max_tokens=4)
        assert refused.value.code == "unknown_model"
        assert prompt not in str(refused.value)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))  # noqa: ASYNC240
    assert "infer" in logs  # the services did log these requests
    forbidden = {
        "prompt": prompt,
        "output": chain.output,
        "chat output": chat.output,
        "router secret": router_keys.secret_hex,
        "node secret": node.keys.secret_hex,
        "client secret": client_keys.secret_hex,
        "router nsec": router_keys.nsec,
    }
    leaked = [name for name, text in forbidden.items() if text in logs]
    assert leaked == [], f"found in service logs: {leaked}"
