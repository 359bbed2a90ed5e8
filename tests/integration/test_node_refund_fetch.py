"""The node's LNURL-pay fetch: a destination resolving to a private address is refused before any connection,
unless private addresses are allowed (loopback tests); redirects are not followed; answers are bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fedai_node.refund_fetch import MAX_BYTES, AddressRefused, public_fetch
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def offer(request: Request) -> Response:
        hits.append(request.url.path)
        return JSONResponse({"tag": "payRequest", "host": request.headers["host"]})

    async def moved(request: Request) -> Response:
        hits.append(request.url.path)
        return RedirectResponse("/offer", status_code=307)

    async def huge(request: Request) -> Response:
        hits.append(request.url.path)
        return Response(b"[" + b"1," * MAX_BYTES + b"1]", media_type="application/json")

    app = Starlette(routes=[Route("/offer", offer), Route("/moved", moved), Route("/huge", huge)])
    async with serve_app(app) as url:
        yield url, hits


async def test_a_private_destination_is_refused_before_connecting(server: tuple[str, list[str]]) -> None:
    url, hits = server
    with pytest.raises(AddressRefused):
        await public_fetch()(url + "/offer")
    with pytest.raises(AddressRefused):
        await public_fetch()(url.replace("127.0.0.1", "localhost") + "/offer")
    assert hits == []


async def test_allowed_it_connects_to_the_checked_address_with_the_name_as_host(server: tuple[str, list[str]]) -> None:
    url, hits = server
    named = url.replace("127.0.0.1", "localhost")
    answer = await public_fetch(allow_private=True)(named + "/offer")
    assert answer == {"tag": "payRequest", "host": named.removeprefix("http://")}
    with pytest.raises(OSError, match="307"):
        await public_fetch(allow_private=True)(url + "/moved")
    with pytest.raises(OSError, match="too large"):
        await public_fetch(allow_private=True)(url + "/huge")
    assert hits == ["/offer", "/moved", "/huge"]
