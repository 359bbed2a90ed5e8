"""A server answering Core Lightning's clnrest shapes over a Ledger, for the CLN backend's tests (not a real CLN).

Every call is `POST /v1/<method>` with the `Rune` header; success is 201 with the method's result, an RPC
failure 500 with `{"code", "message"}`, a refused rune 401.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fedai.payments.config import open_wallet
from fedai.payments.invoice import decode_invoice
from fedai.payments.wallet import Wallet
from tests.support.lightning import Faults, Ledger, LedgerInvoice, PayFailure
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned

_PAY_ERRORS = {
    "no_route": (205, "Could not find a route"),
    "fee": (206, "Route wanted fee of 1000msat, which exceeds maxfee"),
    "insufficient_balance": (205, "We could not find a usable set of paths: insufficient funds"),
    "incorrect_details": (203, "Destination reported an error: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"),
    "expired": (207, "Invoice expired"),
}


def rpc_error(code: int, message: str, status: int = 500) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class FakeCln:
    def __init__(self, ledger: Ledger, node: str, rune: str) -> None:
        self.ledger = ledger
        self.node = node
        self.rune = rune
        self.faults = Faults()
        self.seen_bodies: list[Any] = []
        self.pay_status = "complete"  # what `pay` answers on success ("pending": still in flight)

    def app(self) -> Starlette:
        routes = [Route("/v1/{method}", self.call, methods=["POST"])]
        return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.guard)])

    async def guard(self, request: Request, call_next: Any) -> Response:
        self.faults.requests += 1
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        if self.faults.status is not None:
            return Response(self.faults.body, status_code=self.faults.status, media_type="application/json")
        if request.headers.get("rune") != self.rune:
            return rpc_error(1502, "Not authorized: Not derived from master", status=401)
        response: Response = await call_next(request)
        return response

    async def call(self, request: Request) -> Response:
        body = await request.json()
        self.seen_bodies.append(body)
        handler = {
            "invoice": self.invoice,
            "listinvoices": self.listinvoices,
            "pay": self.pay,
            "listfunds": self.listfunds,
        }.get(request.path_params["method"])
        if handler is None:
            return rpc_error(-32601, "Unknown command", status=404)
        return handler(body)

    def invoice(self, body: dict[str, Any]) -> Response:
        label = str(body["label"])
        if any(i.label == label and i.node == self.node for i in self.ledger.invoices.values()):
            return rpc_error(900, f"Duplicate label '{label}'")
        invoice = self.ledger.create_invoice(
            self.node, int(body["amount_msat"]), body["description"], int(body.get("expiry", 604800)), label
        )
        answer = {
            "payment_hash": invoice.payment_hash,
            "expires_at": invoice.created_at + invoice.expiry,
            "bolt11": invoice.bolt11,
            "payment_secret": "00" * 32,
            "created_index": len(self.ledger.invoices),
        }
        return JSONResponse(answer, status_code=201)

    def entry(self, invoice: LedgerInvoice) -> dict[str, Any]:
        status = "expired" if invoice.expired else {"open": "unpaid", "settled": "paid"}[invoice.state]
        entry: dict[str, Any] = {
            "label": invoice.label,
            "bolt11": invoice.bolt11,
            "payment_hash": invoice.payment_hash,
            "status": status,
            "amount_msat": invoice.amount_msat,
            "description": invoice.memo,
            "expires_at": invoice.created_at + invoice.expiry,
            "created_index": 1,
        }
        if status == "paid":
            preimage = invoice.preimage if not self.faults.tamper_preimage else "33" * 32
            entry |= {
                "amount_received_msat": invoice.paid_msat,
                "paid_at": invoice.paid_at,
                "payment_preimage": preimage,
            }
        return entry

    def listinvoices(self, body: dict[str, Any]) -> Response:
        mine = [i for i in self.ledger.invoices.values() if i.node == self.node]
        if "label" in body:
            mine = [i for i in mine if i.label == body["label"]]
        if "payment_hash" in body:
            mine = [i for i in mine if i.payment_hash == body["payment_hash"]]
        return JSONResponse({"invoices": [self.entry(i) for i in mine]}, status_code=201)

    def pay(self, body: dict[str, Any]) -> Response:
        bolt11 = body["bolt11"]
        payment_hash = decode_invoice(bolt11, network=None).payment_hash
        if self.pay_status == "pending":
            return JSONResponse({"payment_hash": payment_hash, "status": "pending"}, status_code=201)
        try:
            payment = self.ledger.pay(self.node, bolt11, int(body["maxfee"]))
        except PayFailure as failure:
            return rpc_error(*_PAY_ERRORS[failure.reason])
        preimage = payment.preimage if not self.faults.tamper_preimage else "44" * 32
        answer = {
            "destination": "02" + "00" * 32,
            "payment_hash": payment_hash,
            "created_at": 1.0,
            "parts": 1,
            "amount_msat": payment.amount_msat,
            "amount_sent_msat": payment.amount_msat + payment.fee_msat,
            "payment_preimage": preimage,
            "status": "complete",
        }
        return JSONResponse(answer, status_code=201)

    def listfunds(self, body: dict[str, Any]) -> Response:
        balance = self.ledger.nodes[self.node].balance_msat
        channels = [
            {
                "peer_id": "02" + "11" * 32,
                "our_amount_msat": balance,
                "amount_msat": balance * 2,
                "state": "CHANNELD_NORMAL",
            },
            {"peer_id": "02" + "22" * 32, "our_amount_msat": 777, "amount_msat": 1000, "state": "ONCHAIN"},
        ]
        return JSONResponse({"outputs": [], "channels": channels}, status_code=201)


@dataclass
class Cln:
    fake: FakeCln
    wallet: Wallet
    rune: str


@asynccontextmanager
async def running_cln(ledger: Ledger, node: str, tls: SelfSigned, tmp: Path, **params: str) -> AsyncIterator[Cln]:
    rune = base64.urlsafe_b64encode(os.urandom(60)).decode()  # the shape of a rune; clnrest only compares it
    (tmp / f"{node}.rune").write_text(rune + "\n")
    fake = FakeCln(ledger, node, rune)
    async with serve_app(fake.app(), tls=tls.files) as url:
        query = "&".join(f"{k}={v}" for k, v in {"rune_file": tmp / f"{node}.rune", "cert": tls.cert, **params}.items())
        wallet = open_wallet(f"clnrest+{url}?{query}", "ROUTER_WALLET")
        try:
            yield Cln(fake, wallet, rune)
        finally:
            await wallet.aclose()
