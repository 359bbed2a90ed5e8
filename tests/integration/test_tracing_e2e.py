"""One trace across every hop, federation included: a client process asks router A, which has no node for the
model, so A auctions the job over the relay and sends it to provider router B, which runs it on its node. Each
of the four is its own OS process exporting to a real OTLP/HTTP receiver here; the spans they send form one
trace with the right parents (client → A → B's /federation/job → B's node call → node → runner). A stream
through B is traced the same way, down to the node's stream and its runner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from fedai.nostr.local_relay import start_local_relay
from fedai.protocol.keys import Keys
from tests.support.database import extra_database
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.router import ADMIN
from tests.support.servers import serve_app
from tests.support.services import Service, base_env, network, wait_until_node_listed
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "fedai-mock-1"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind

CLIENT_PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from fedai.observability.tracing import setup_tracing, span
    from fedai.sdk import AsyncClient

    async def main(url: str, pubkey: str, model: str, mode: str) -> None:
        async with AsyncClient(url, router_pubkey=pubkey) as client:
            if mode == "unary":  # the SDK's own client.request span
                chain = await client.infer(model, "hello across two routers", max_tokens=8)
            else:  # a stream, under the application's own span
                with span("app.stream"):
                    async with await client.stream(model, "hello stream", max_tokens=8) as stream:
                        assert "".join([delta async for delta in stream])
                        chain = stream.chain
        print("provider", chain.provider, "node", chain.node)

    provider = setup_tracing("fedai-client")
    asyncio.run(main(*sys.argv[1:]))
    provider.shutdown()
    """
)


def _otel(receiver_url: str, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s
    }


FEDERATION = {
    "ROUTER_AUCTION_TTL_MS": "2500",
    "ROUTER_ANNOUNCE_S": "1",
    "ROUTER_REAUCTION_COOLDOWN_MS": "0",
}


async def _learn(a: Service, b: Service, within: float = 20) -> None:
    """Wait until A has learned B, with the model B's node serves, from the relay."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            peers = (await http.get(a.url + "/federation/peers", headers=ADMIN)).json()
            if any(p["pubkey"] == b.keys.pubkey and p["fresh"] and MODEL in json.dumps(p["caps"]) for p in peers):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"A did not learn B from the relay within {within} s")


async def _client(otlp: str, router: Service, mode: str) -> str:
    """Run the client program (its own process, tracing to `otlp`) against `router`; its output."""
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CLIENT_PROGRAM, router.url, router.keys.pubkey, MODEL, mode],
        env={**base_env(), **_otel(otlp, "client")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


class Trace:
    """The spans of one trace, found by (service, name)."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans

    def one(self, service: str, name: str, **attributes: object) -> ReceivedSpan:
        found = [
            s
            for s in self.spans
            if (s.service, s.name) == (service, name) and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert len(found) == 1, (service, name, [(s.service, s.name) for s in self.spans])
        return found[0]


def _child_of(child: ReceivedSpan, parent: ReceivedSpan) -> bool:
    return child.parent_id == parent.span_id and child.trace_id == parent.trace_id


async def test_one_trace_with_correct_parents_across_client_router_provider_and_node(
    tmp_path: Path, database_url: str
) -> None:
    receiver = OtlpReceiver()
    relay = await start_local_relay()
    try:
        async with (
            serve_app(receiver.app()) as otlp,
            extra_database(database_url, "trace_a") as a_db,
            extra_database(database_url, "trace_b") as b_db,
        ):
            with network(tmp_path) as net:
                common = {"ROUTER_RELAYS": relay.url, **FEDERATION}
                a = net.router("router-a", Keys.generate(), a_db, **common, **_otel(otlp, "router-a"))
                b = net.router("router-b", Keys.generate(), b_db, **common, **_otel(otlp, "router-b"))
                node = net.node("node-b", b, **_otel(otlp, "node-b"))
                await asyncio.to_thread(wait_until_node_listed, b, node)
                await _learn(a, b)
                unary = await _client(otlp, a, "unary")
                assert f"provider {b.keys.pubkey}" in unary  # served by B, through A
                streamed = await _client(otlp, b, "stream")
                assert f"node {node.keys.pubkey}" in streamed  # B's own node, streamed
                await eventually(
                    lambda: bool(
                        receiver.named("node-b", "node.stream") and receiver.named("router-a", "router.store")
                    ),
                    within=15,
                    what="the spans reach the receiver",
                )
    finally:
        relay.shutdown()

    root = receiver.named("client", "client.request")
    assert len(root) == 1 and root[0].parent_id == "" and root[0].kind == CLIENT
    t = Trace([s for s in receiver.spans if s.trace_id == root[0].trace_id])
    a_request = t.one("router-a", "router.request", **{"url.path": "/infer"})
    a_job = t.one("router-a", "router.job", **{"fedai.role": "requester", "fedai.peer": b.keys.pubkey})
    a_call = t.one("router-a", "router.peer_call")
    b_request = t.one("router-b", "router.request", **{"url.path": "/federation/job"})
    b_job = t.one("router-b", "router.job", **{"fedai.role": "provider"})
    b_attempt = t.one("router-b", "router.dispatch_attempt", **{"fedai.attempt": 1, "fedai.node": node.keys.pubkey})
    b_call = t.one("router-b", "router.node_call", **{"http.response.status_code": 200})
    n_request = t.one("node-b", "node.request", **{"url.path": "/infer"})
    runner = t.one("node-b", "node.runner", **{"fedai.model": MODEL})
    assert _child_of(a_request, root[0]) and a_request.kind == SERVER
    assert _child_of(t.one("router-a", "router.auction"), a_request)
    assert _child_of(a_job, a_request) and _child_of(a_call, a_job) and a_call.kind == CLIENT
    assert _child_of(b_request, a_call) and b_request.kind == SERVER  # across the federation hop
    assert _child_of(b_job, b_request)
    assert _child_of(t.one("router-b", "router.schedule", **{"fedai.model": MODEL}), b_job)
    assert _child_of(b_attempt, b_job) and _child_of(b_call, b_attempt)
    assert _child_of(t.one("router-b", "router.verify"), b_attempt)
    assert _child_of(t.one("router-b", "router.store"), b_job)
    assert _child_of(n_request, b_call) and n_request.kind == SERVER  # across the router → node hop
    assert _child_of(runner, n_request)
    assert isinstance(runner.attributes["fedai.tokens.output"], int) and runner.attributes["fedai.tokens.output"] > 0
    assert _child_of(t.one("router-a", "router.store"), a_job)
    # the stream: the application's span → B → its node's stream → the runner, the traceparent on each hop
    app = receiver.named("client", "app.stream")
    assert len(app) == 1 and app[0].parent_id == ""
    st = Trace([x for x in receiver.spans if x.trace_id == app[0].trace_id])
    s_request = st.one("router-b", "router.request", **{"url.path": "/infer/stream"})
    s_attempt = st.one("router-b", "router.dispatch_attempt", **{"fedai.attempt": 1})
    s_call = st.one("router-b", "router.node_call", **{"fedai.stream": True, "http.response.status_code": 200})
    s_node = st.one("node-b", "node.request", **{"url.path": "/infer/stream"})
    s_stream = st.one("node-b", "node.stream", **{"fedai.outcome": "ok"})
    assert _child_of(s_request, app[0]) and _child_of(s_attempt, s_request) and _child_of(s_call, s_attempt)
    assert _child_of(s_node, s_call) and _child_of(s_stream, s_node)
    assert _child_of(st.one("node-b", "node.runner", **{"fedai.stream": True}), s_stream)
    # nothing a client wrote or a model answered is in any span
    assert "hello across two routers" not in repr(receiver.spans) and "hello stream" not in repr(receiver.spans)
