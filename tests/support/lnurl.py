"""An LNURL-pay service (LUD-06/LUD-16) on loopback for refund tests: `/.well-known/lnurlp/<name>` offers a
payRequest whose callback answers invoices made by a real wallet (LNbits). `failing` makes it answer 500."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fedai.payments.wallet import Wallet

MIN_SENDABLE = 1_000
MAX_SENDABLE = 100_000_000


@dataclass
class LnurlService:
    wallet: Wallet
    base_url: str = ""  # set once served
    failing: bool = False
    invoices_made: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/lnurlp/{name}", self._offer),
                Route("/callback/{name}", self._callback),
            ]
        )

    async def _offer(self, request: Request) -> Response:
        if self.failing:
            return Response("down", status_code=500)
        name = request.path_params["name"]
        return JSONResponse(
            {
                "tag": "payRequest",
                "callback": f"{self.base_url}/callback/{name}",
                "minSendable": MIN_SENDABLE,
                "maxSendable": MAX_SENDABLE,
                "metadata": json.dumps([["text/plain", f"refunds to {name}"]]),
            }
        )

    async def _callback(self, request: Request) -> Response:
        if self.failing:
            return Response("down", status_code=500)
        amount = int(request.query_params["amount"])
        made = await self.wallet.create_invoice(amount, "refund", 600, os.urandom(8).hex())
        self.invoices_made.append(made.bolt11)
        return JSONResponse({"pr": made.bolt11, "routes": []})
