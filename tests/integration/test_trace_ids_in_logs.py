"""From a failed request's log line to its trace: a router tracing to a real OTLP receiver, its only node killed
after it registered; the client's request fails `upstream_error` (or `upstream_timeout`), the router logs one
`request failed` line and a `node attempt failed` line for the attempt, both with the request's trace id, and
that trace holds the router's spans for the request (runbooks/triage.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient, FedaiClientError
from tests.support.database import extra_database
from tests.support.otlp import OtlpReceiver
from tests.support.servers import serve_app
from tests.support.services import network, wait_until_node_listed
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "fedai-mock-1"


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_a_request_the_node_failed_is_logged_with_its_trace_id(tmp_path: Path, database_url: str) -> None:
    receiver = OtlpReceiver()
    async with serve_app(receiver.app()) as otlp, extra_database(database_url, "trace_logs") as db:
        with network(tmp_path) as net:
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "100"}
            router = net.router("router", Keys.generate(), db, OTEL_SERVICE_NAME="router", **otel)
            node = net.node("node", router)
            await asyncio.to_thread(wait_until_node_listed, router, node)
            node.child.popen.kill()  # registered and fresh, now gone: the router's call to it fails
            await asyncio.to_thread(node.child.popen.wait, 10)
            async with AsyncClient(router.url, router_pubkey=router.keys.pubkey) as client:
                with pytest.raises(FedaiClientError) as failed:
                    await client.infer(MODEL, "a prompt the log must not show", max_tokens=8)
            assert failed.value.code in ("upstream_error", "upstream_timeout")
            log = tmp_path / "router.log"
            await eventually(
                lambda: any(line["msg"] == "request failed" for line in _lines(log)),
                within=10,
                what="the router logs the failed request",
            )
            [request_failed] = [line for line in _lines(log) if line["msg"] == "request failed"]
            await eventually(
                lambda: any(
                    s.trace_id == request_failed.get("trace_id") for s in receiver.named("router", "router.request")
                ),
                within=15,
                what="the request's spans reach the receiver",
            )
    assert request_failed["route"] == "infer" and request_failed["code"] == failed.value.code
    trace_id = request_failed["trace_id"]
    attempts = [line for line in _lines(log) if line["msg"] == "node attempt failed"]
    assert attempts and all(line["trace_id"] == trace_id for line in attempts)
    spans = [s for s in receiver.spans if s.trace_id == trace_id]
    [request] = [s for s in spans if s.name == "router.request"]
    assert request.attributes["url.path"] == "/infer" and request.attributes["http.response.status_code"] >= 500
    assert [s for s in spans if s.name == "router.dispatch_attempt"]
    assert request_failed["span_id"] in {s.span_id for s in spans}
    assert "a prompt the log must not show" not in log.read_text()
