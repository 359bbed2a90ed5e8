"""The REST client every wallet backend shares, against a real server on loopback: a compressed answer is read as
the JSON it is (real LNbits, LND and Core Lightning servers may gzip), and the size bound holds on what the
answer decompresses to, so a small compressed body cannot expand past it."""

from __future__ import annotations

import gzip
import json
import ssl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedai.payments.backends.http import RestClient
from fedai.payments.errors import WalletUnavailable
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration


def _gzipped(document: object) -> Response:
    body = gzip.compress(json.dumps(document).encode())
    return Response(body, headers={"content-type": "application/json", "content-encoding": "gzip"})


async def small(_: Request) -> Response:
    return _gzipped({"balance": 1234})


async def bomb(_: Request) -> Response:
    return _gzipped({"pad": "0" * (4 << 20)})  # ~4 KiB on the wire, 4 MiB once decompressed


APP = Starlette(routes=[Route("/small", small), Route("/bomb", bomb)])


async def test_a_gzipped_answer_is_read_as_json() -> None:
    async with serve_app(APP) as url:
        client = RestClient("test wallet", url, headers={}, verify=ssl.create_default_context(), timeout_s=5)
        try:
            assert (await client.call("GET", "/small")).body == {"balance": 1234}
        finally:
            await client.aclose()


async def test_the_size_bound_counts_decompressed_bytes() -> None:
    async with serve_app(APP) as url:
        client = RestClient("test wallet", url, headers={}, verify=ssl.create_default_context(), timeout_s=5)
        try:
            with pytest.raises(WalletUnavailable) as err:
                await client.call("GET", "/bomb")
            assert err.value.reason == "bad_reply" and "larger than" in err.value.message
        finally:
            await client.aclose()
