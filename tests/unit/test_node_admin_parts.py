"""The pure parts behind the node's admin API: run-time prices (a raise charged only once routers heard it), the
routers it accepts, an operator's drain and resume, and the drain gate's exempt prefixes."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fedai.protocol.messages import Pricing
from fedai.service.drain import Drain, DrainGate
from fedai_node.prices import NodePrices
from fedai_node.trusted_routers import TrustedRouters

ENV = Pricing(input_msat=1000, output_msat=2000)


def test_a_raise_is_advertised_at_once_and_charged_once_settled() -> None:
    prices = NodePrices(ENV)
    prices.set("m", Pricing(input_msat=3000, output_msat=1500))
    assert prices.advertised("m") == Pricing(input_msat=3000, output_msat=1500)
    assert prices.charged("m") == Pricing(input_msat=1000, output_msat=1500)  # the lower of each rate
    assert prices.charged("other") == ENV and prices.advertised("other") == ENV
    prices.set("m", Pricing(input_msat=5000, output_msat=5000))  # a second change before the routers heard the first
    assert prices.charged("m") == ENV
    prices.settle()
    assert prices.charged("m") == Pricing(input_msat=5000, output_msat=5000)


def test_a_cut_is_charged_at_once_and_none_goes_back_to_the_environment() -> None:
    prices = NodePrices(ENV)
    prices.set("m", Pricing(input_msat=10, output_msat=20))
    assert prices.charged("m") == Pricing(input_msat=10, output_msat=20)
    prices.settle()
    prices.set("m", None)
    assert prices.advertised("m") == ENV and prices.charged("m") == Pricing(input_msat=10, output_msat=20)
    assert dict(prices.overrides) == {}
    prices.load({"x": Pricing(input_msat=1, output_msat=1)})
    assert prices.charged("x") == Pricing(input_msat=1, output_msat=1) and prices.charged("m") == ENV


def test_trusted_routers_are_the_configured_plus_allowed_minus_blocked() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    trusted = TrustedRouters(frozenset({a, b}))
    assert a in trusted and c not in trusted and len(trusted) == 2
    trusted.apply({c: "allow", a: "block"})
    assert list(trusted) == [b, c] and a not in trusted
    trusted.apply({})
    assert list(trusted) == [a, b]


def gated(drain: Drain) -> Starlette:
    async def ok(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/infer", ok, methods=["POST"]), Route("/admin/api/resume", ok, methods=["POST"])],
        middleware=[Middleware(DrainGate, drain=drain, exempt_prefixes=("/admin/api/",))],
    )


async def test_an_operators_drain_refuses_new_requests_until_resumed_but_never_after_sigterm() -> None:
    drain, told = Drain(timeout_s=5), []

    async def leaving() -> None:
        told.append("leaving")

    async def back() -> None:
        told.append("back")

    drain.on_drain(leaving)
    drain.on_resume(back)
    transport = httpx.ASGITransport(app=gated(drain))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await drain.begin()
        assert drain.draining and not drain.stopping and told == ["leaving"]
        assert (await http.post("/infer")).status_code == 503
        assert (await http.post("/admin/api/resume")).status_code == 200  # the admin API stays open
        assert await drain.resume() is True
        assert not drain.draining and told == ["leaving", "back"]
        assert (await http.post("/infer")).status_code == 200
        assert await drain.run() is True  # SIGTERM
        assert await drain.resume() is False and drain.draining and told == ["leaving", "back", "leaving"]
