"""The real Prometheus server (Debian's package) scrapes a router and a node started as processes on loopback, the
router's /metrics with its operator token: requests sent through the router show up as `fedai_` series in
Prometheus's query API, the relay pool's gauges show the relay connected, and the project's rules are loaded and
evaluated, the recording rules over the scraped series, with no alert pending or firing on this healthy network;
and every Grafana dashboard query is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from fedai.cli.processes import free_port, wait_for_http
from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from tests.support.grafana import queries
from tests.support.prometheus import alert_names, binary, prometheus_argv, recorded_names, scrape_config
from tests.support.router import ADMIN_TOKEN, reset_database
from tests.support.services import Service, network, wait_until_node_listed
from tests.support.wait import eventually_async

pytestmark = pytest.mark.integration

SERVED = 'sum(fedai_router_requests_total{route="infer",code="ok"})'
NODE_SERVED = 'sum(fedai_node_requests_total{code="ok"})'


class PromQL:
    """Prometheus's HTTP API: instant queries, rules and alerts."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def _data(self, path: str, **params: str) -> Any:
        body = (await self.http.get(self.url + path, params=params)).json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._data("/api/v1/query", query=expr))["result"]
        return result

    async def value(self, expr: str) -> float | None:
        """The single sample's value, or None while the query returns nothing."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    async def equals(self, expr: str, expected: float) -> bool:
        return await self.value(expr) == expected

    async def rules(self) -> list[dict[str, Any]]:
        return [rule for group in (await self._data("/api/v1/rules"))["groups"] for rule in group["rules"]]

    async def rules_evaluated(self) -> bool:
        return all(rule["health"] == "ok" for rule in await self.rules())

    async def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self._data("/api/v1/alerts"))["alerts"]
        return alerts


async def infer(http: httpx.AsyncClient, router: Service) -> None:
    event = seal(
        Keys.generate(),
        Kind.INFER_REQUEST,
        InferenceRequest(model="fedai-mock-1", prompt="hi", max_tokens=8),
        to=router.keys.pubkey,
        nonce=True,
    )
    response = await http.post(router.url + "/infer", content=event.to_json())
    assert response.status_code == 200, response.text


async def test_prometheus_scrapes_router_and_node_and_loads_the_rules_quietly(
    tmp_path: Path, database_url: str, db_pool: asyncpg.Pool, own_relay_url: str
) -> None:
    relay_url = own_relay_url  # the session's relay replays other tests' node announcements: nodes counted here
    binary("prometheus")  # skip before starting anything when the package is absent
    await reset_database(db_pool)
    token = tmp_path / "router-admin.token"
    token.write_text(ADMIN_TOKEN)
    with network(tmp_path) as net:
        router = net.router("router", Keys.generate(), database_url, ROUTER_RELAYS=relay_url)
        node = net.node("node", router)
        wait_until_node_listed(router, node)
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(router.url, node.url, token)))
        port = free_port()
        argv = prometheus_argv(config, tmp_path / "tsdb", port)
        server = net.sup.spawn("prometheus", argv, {"PATH": "/usr/bin:/bin"}, tmp_path / "prometheus.log")
        wait_for_http(server, f"http://127.0.0.1:{port}/-/ready", timeout=30)

        async with httpx.AsyncClient(timeout=30) as http:
            prom = PromQL(http, f"http://127.0.0.1:{port}")
            # one request, seen; then two more: the counter grows between scrapes, so rates are not zero
            await infer(http, router)
            await eventually_async(lambda: prom.equals(SERVED, 1), 30, "the router's first request")
            await infer(http, router)
            await infer(http, router)
            await eventually_async(lambda: prom.equals(SERVED, 3), 30, "the router's requests")
            await eventually_async(lambda: prom.equals(NODE_SERVED, 3), 30, "the node's requests")
            assert await prom.value('fedai_router_nodes{state="fresh"}') == 1
            await eventually_async(lambda: prom.equals("fedai_router_relays_connected", 1), 30, "the relay")
            assert await prom.value("fedai_router_relays") == 1
            up = {r["metric"]["job"]: r["value"][1] for r in await prom.query("up")}
            assert up == {"fedai-router": "1", "fedai-node": "1"}

            # the recording rules compute over the scraped series
            rate = 'fedai:router_requests:rate5m{route="infer"}'
            await eventually_async(lambda: _positive(prom, rate), 30, "the recorded request rate")

            # every rule loaded and evaluated without error; no alert pending or firing
            await eventually_async(prom.rules_evaluated, 30, "every rule evaluated")
            rules = await prom.rules()
            assert sorted(r["name"] for r in rules if r["type"] == "alerting") == sorted(alert_names())
            assert {r["name"] for r in rules if r["type"] == "recording"} == recorded_names()
            assert [r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"] == []
            assert await prom.alerts() == []

            # every dashboard query is PromQL this Prometheus accepts (an invalid one answers status "error")
            for title, expr in queries():
                assert isinstance(await prom.query(expr), list), title


async def _positive(prom: PromQL, expr: str) -> bool:
    return (await prom.value(expr) or 0) > 0
