"""node.announce on a real (embedded) relay, read back over a raw websocket REQ and verified."""

from __future__ import annotations

import asyncio
import json

import httpx
import msgspec
import nostr_sdk
import pytest
import websockets

from fedai.protocol.event import Event, decode_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, decode_payload
from fedai.service.config import Env
from fedai_node.app import create_app
from fedai_node.config import from_env
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration


async def announces(relay_url: str, author: str, count: int, within: float) -> list[Event]:
    """The first `count` kind-31023 events by `author` the relay sends (stored, then live)."""
    found: list[Event] = []
    async with asyncio.timeout(within), websockets.connect(relay_url) as ws:
        await ws.send(json.dumps(["REQ", "announce", {"kinds": [Kind.NODE_ANNOUNCE], "authors": [author]}]))
        while len(found) < count:
            message = msgspec.json.decode(await ws.recv())
            if message[0] == "EVENT" and message[1] == "announce":
                raw = json.dumps(message[2])
                assert nostr_sdk.Event.from_json(raw).verify()
                event = decode_event(raw)
                verify_event(event)
                if event.id not in {e.id for e in found}:
                    found.append(event)
    return found


async def test_node_announces_on_relays(relay_url: str) -> None:
    keys = Keys.generate()
    settings = from_env(
        Env(
            {
                "NODE_PRIVATE_KEY": keys.secret_hex,
                "ROUTER_PUBLIC_KEY": Keys.generate().pubkey,
                "NODE_RUNNER": "mock",
                "NODE_RELAYS": relay_url,
                "NODE_ANNOUNCE_S": "1",
                "NODE_ENDPOINT": "http://node.example:8090",
            }
        )
    )
    async with serve_app(create_app(settings)) as url:
        first, second = await announces(relay_url, keys.pubkey, count=2, within=10)
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"{url}/metrics")).text
    assert second.created_at >= first.created_at
    for event in (first, second):
        assert event.kind == Kind.NODE_ANNOUNCE
        assert event.pubkey == keys.pubkey
        assert event.tags[:2] == [["d", "fedai-node"], ["t", "fedai"]]
        assert event.tag_values("model") == ["fedai-mock-1"]
        descriptor = decode_payload(event.content, NodeDescriptor)
        assert descriptor.endpoint == "http://node.example:8090"
        assert [m.id for m in descriptor.models] == ["fedai-mock-1"]
    assert 'fedai_node_announces_total{result="ok"}' in metrics
