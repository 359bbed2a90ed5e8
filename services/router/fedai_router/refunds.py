"""The router's refunds of its fee (docs/payments.md#refunds): LNURL-pay destinations are reached through the
router's SSRF-safe outbound session (`fedai_router.outbound`: the address connected to is judged, no redirect is
followed, the body is bounded), and paid from the router's own wallet by `fedai.refunder.Refunder`."""

from __future__ import annotations

from typing import Any

import aiohttp

from fedai.payments.destination import FetchJson
from fedai.protocol.jsonguard import decode_json
from fedai.service.client import read_limited
from fedai_router.outbound import Outbound

MAX_LNURL_BYTES = 64 * 1024
LNURL_TIMEOUT = aiohttp.ClientTimeout(total=10)


def outbound_fetch(outbound: Outbound) -> FetchJson:
    """GET a URL's JSON through the router's guarded session; any failure raises (the refund is retried)."""

    async def fetch(url: str) -> Any:
        async with outbound.session.get(url, allow_redirects=False, timeout=LNURL_TIMEOUT) as reply:
            body = await read_limited(reply, MAX_LNURL_BYTES)
            if reply.status != 200:
                raise OSError(f"LNURL answer {reply.status}")
            return decode_json(body)

    return fetch
