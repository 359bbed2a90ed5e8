"""A server answering LND's documented REST shapes over a Ledger, for the LND backend's tests (not a real LND).

Bytes fields are base64, int64 fields are strings, errors are `{"code", "message", "details"}` (grpc-gateway),
and the router's payment calls stream one JSON object per line (`{"result": Payment}` or `{"error": …}`).
"""

from __future__ import annotations

import asyncio
import base64
import json
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

_FAILURE = {
    "no_route": "FAILURE_REASON_NO_ROUTE",
    "fee": "FAILURE_REASON_NO_ROUTE",
    "insufficient_balance": "FAILURE_REASON_INSUFFICIENT_BALANCE",
    "incorrect_details": "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS",
    "expired": "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS",
}
_STATE = {"open": "OPEN", "settled": "SETTLED", "canceled": "CANCELED"}


def b64(hex_value: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_value)).decode()


def grpc_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": []}, status_code=status)


def lines(*documents: dict[str, Any]) -> Response:
    return Response("".join(json.dumps(d) + "\n" for d in documents), media_type="application/json")


class FakeLnd:
    def __init__(self, ledger: Ledger, node: str, macaroon: bytes) -> None:
        self.ledger = ledger
        self.node = node
        self.macaroon_hex = macaroon.hex()
        self.faults = Faults()
        self.seen_bodies: list[Any] = []

    def app(self) -> Starlette:
        routes = [
            Route("/v1/invoices", self.add_invoice, methods=["POST"]),
            Route("/v1/invoice/{r_hash_str}", self.lookup_invoice, methods=["GET"]),
            Route("/v2/router/send", self.send_payment, methods=["POST"]),
            Route("/v2/router/track/{payment_hash}", self.track_payment, methods=["GET"]),
            Route("/v1/balance/channels", self.channel_balance, methods=["GET"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.guard)])

    async def guard(self, request: Request, call_next: Any) -> Response:
        self.faults.requests += 1
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        if self.faults.status is not None:
            return Response(self.faults.body, status_code=self.faults.status, media_type="application/json")
        macaroon = request.headers.get("grpc-metadata-macaroon")
        if macaroon is None:
            return grpc_error(500, 2, "expected 1 macaroon, got 0")
        if macaroon != self.macaroon_hex:
            return grpc_error(500, 2, "verification failed: signature mismatch after caveat verification")
        response: Response = await call_next(request)
        return response

    async def add_invoice(self, request: Request) -> Response:
        body = await request.json()
        self.seen_bodies.append(body)
        amount = int(body.get("value_msat", 0))
        invoice = self.ledger.create_invoice(self.node, amount, body.get("memo", ""), int(body.get("expiry", 3600)))
        answer = {
            "r_hash": b64(invoice.payment_hash),
            "payment_request": invoice.bolt11,
            "add_index": str(len(self.ledger.invoices)),
            "payment_addr": b64("00" * 32),
        }
        return JSONResponse(answer)

    def invoice_json(self, invoice: LedgerInvoice) -> dict[str, Any]:
        preimage = invoice.preimage if not self.faults.tamper_preimage else "11" * 32
        state = "CANCELED" if invoice.expired else _STATE[invoice.state]
        return {
            "memo": invoice.memo,
            "r_preimage": b64(preimage),
            "r_hash": b64(invoice.payment_hash),
            "value": str(invoice.amount_msat // 1000),
            "value_msat": str(invoice.amount_msat),
            "settled": invoice.state == "settled",
            "creation_date": str(invoice.created_at),
            "settle_date": str(invoice.paid_at),
            "payment_request": invoice.bolt11,
            "expiry": str(invoice.expiry),
            "amt_paid_sat": str(invoice.paid_msat // 1000),
            "amt_paid_msat": str(invoice.paid_msat),
            "state": state,
        }

    async def lookup_invoice(self, request: Request) -> Response:
        invoice = self.ledger.invoices.get(request.path_params["r_hash_str"])
        if invoice is None or invoice.node != self.node:
            return grpc_error(404, 5, "unable to locate invoice")
        return JSONResponse(self.invoice_json(invoice))

    def payment_json(self, payment_hash: str, status: str, **extra: Any) -> dict[str, Any]:
        return {"payment_hash": payment_hash, "status": status, "failure_reason": "FAILURE_REASON_NONE", **extra}

    async def send_payment(self, request: Request) -> Response:
        body = await request.json()
        self.seen_bodies.append(body)
        bolt11 = body["payment_request"]
        payment_hash = self.ledger_hash(bolt11)
        if self.ledger.paid_by(self.node, payment_hash) is not None and not self.ledger.pays_twice:
            return lines({"error": {"code": 6, "message": "invoice is already paid", "details": []}})
        try:
            payment = self.ledger.pay(self.node, bolt11, int(body["fee_limit_msat"]))
        except PayFailure as failure:
            failed = self.payment_json(payment_hash, "FAILED", failure_reason=_FAILURE[failure.reason])
            return lines({"result": failed})
        return lines({"result": self.succeeded(payment_hash, payment.preimage, payment.fee_msat, payment.amount_msat)})

    def succeeded(self, payment_hash: str, preimage: str, fee_msat: int, amount_msat: int) -> dict[str, Any]:
        preimage = preimage if not self.faults.tamper_preimage else "22" * 32
        return self.payment_json(
            payment_hash,
            "SUCCEEDED",
            payment_preimage=preimage,
            value_msat=str(amount_msat),
            fee_msat=str(fee_msat),
            fee_sat=str(fee_msat // 1000),
        )

    def ledger_hash(self, bolt11: str) -> str:
        return decode_invoice(bolt11, network=None).payment_hash

    async def track_payment(self, request: Request) -> Response:
        raw = request.path_params["payment_hash"]
        payment_hash = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
        payment = self.ledger.paid_by(self.node, payment_hash)
        if payment is None:
            return lines({"error": {"code": 5, "message": "payment isn't initiated", "details": []}})
        return lines({"result": self.succeeded(payment_hash, payment.preimage, payment.fee_msat, payment.amount_msat)})

    async def channel_balance(self, request: Request) -> Response:
        balance = self.ledger.nodes[self.node].balance_msat
        return JSONResponse(
            {
                "balance": str(balance // 1000),
                "local_balance": {"sat": str(balance // 1000), "msat": str(balance)},
                "remote_balance": {"sat": "0", "msat": "0"},
                "unsettled_local_balance": {"sat": "0", "msat": "0"},
            }
        )


@dataclass
class Lnd:
    fake: FakeLnd
    wallet: Wallet
    macaroon: bytes
    spec: str  # the wallet URI, for a service that opens its own (NODE_WALLET, ROUTER_WALLET)


@asynccontextmanager
async def running_lnd(ledger: Ledger, node: str, tls: SelfSigned, tmp: Path, **params: str) -> AsyncIterator[Lnd]:
    macaroon = os.urandom(48)
    (tmp / f"{node}.macaroon").write_bytes(macaroon)
    fake = FakeLnd(ledger, node, macaroon)
    async with serve_app(fake.app(), tls=tls.files) as url:
        query = "&".join(
            f"{k}={v}" for k, v in {"macaroon": tmp / f"{node}.macaroon", "cert": tls.cert, **params}.items()
        )
        spec = f"lnd+{url}?{query}"
        wallet = open_wallet(spec, "NODE_WALLET")
        try:
            yield Lnd(fake, wallet, macaroon, spec)
        finally:
            await wallet.aclose()
