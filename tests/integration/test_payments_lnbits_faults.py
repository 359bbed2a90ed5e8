"""The LNbits backend against an HTTP server on loopback that misbehaves the ways a real LNbits can't be made to:
5xx, slow answers, answers that are not JSON, invoices that are not what was asked, preimages that do not match.
Each becomes a typed wallet error; nothing is taken for a proof.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fedai.payments.backends.lnbits import LnbitsBackend, open_lnbits
from fedai.payments.errors import InvalidInvoice, WalletUnavailable
from fedai.payments.spec import parse_spec
from tests.support.invoices import InvoiceSigner
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

SIGNER = InvoiceSigner()


@dataclass
class Script:
    """What the fake answers next, per route: a status and a body (a dict, or text), or a delay first."""

    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    delay_s: float = 0.0
    keys_seen: list[str] = field(default_factory=list)

    async def answer(self, request: Request) -> Response:
        self.keys_seen.append(request.headers.get("x-api-key", ""))
        await asyncio.sleep(self.delay_s)
        route = f"{request.method} {request.url.path}"
        status, body = self.answers.get(route, (404, {"detail": "no such route"}))
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=status)
        return JSONResponse(body, status_code=status)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Script, LnbitsBackend]]:
    script = Script()
    app = Starlette(routes=[Route("/{path:path}", script.answer, methods=["GET", "POST"])])
    async with serve_app(app) as url:
        wallet = open_lnbits(parse_spec(f"lnbits+{url}?key=the-admin-key&network=regtest&timeout=1"))
        yield script, wallet
        await wallet.aclose()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [(503, {"detail": "down"}, "backend_error"), (500, "oops", "bad_reply"), (200, "not json", "bad_reply")],
)
async def test_server_errors_and_unreadable_answers_are_unavailable(
    fake: tuple[Script, LnbitsBackend], status: int, body: Any, reason: str
) -> None:
    script, wallet = fake
    script.answers["GET /api/v1/wallet"] = (status, body)
    with pytest.raises(WalletUnavailable) as unavailable:
        await wallet.balance_msat()
    assert unavailable.value.reason == reason
    assert script.keys_seen == ["the-admin-key"] and "the-admin-key" not in str(unavailable.value)


async def test_a_slow_lnbits_is_unavailable_after_the_timeout(fake: tuple[Script, LnbitsBackend]) -> None:
    script, wallet = fake
    script.answers["GET /api/v1/wallet"] = (200, {"balance": 5})
    script.delay_s = 3.0
    with pytest.raises(WalletUnavailable) as unavailable:
        await wallet.balance_msat()
    assert unavailable.value.reason == "timeout"


async def test_an_invoice_for_another_amount_than_asked_is_refused(fake: tuple[Script, LnbitsBackend]) -> None:
    script, wallet = fake
    bolt11, payment_hash, _ = SIGNER.invoice(2_000)
    script.answers["GET /api/v1/payments"] = (200, [])
    script.answers["POST /api/v1/payments"] = (201, {"bolt11": bolt11, "payment_hash": payment_hash, "amount": 2_000})
    with pytest.raises(InvalidInvoice) as invalid:
        await wallet.create_invoice(1_000, "asked 1 sat", 600, "k")
    assert invalid.value.reason == "wrong_amount"


async def test_an_invoice_whose_hash_is_not_the_one_answered_is_refused(fake: tuple[Script, LnbitsBackend]) -> None:
    script, wallet = fake
    bolt11, _, _ = SIGNER.invoice(1_000)
    script.answers["GET /api/v1/payments"] = (200, [])
    script.answers["POST /api/v1/payments"] = (201, {"bolt11": bolt11, "payment_hash": os.urandom(32).hex()})
    with pytest.raises(InvalidInvoice) as invalid:
        await wallet.create_invoice(1_000, "hash", 600, "k")
    assert invalid.value.reason == "wrong_payment_hash"


async def test_a_paid_lookup_or_payment_without_the_right_preimage_is_no_proof(
    fake: tuple[Script, LnbitsBackend],
) -> None:
    script, wallet = fake
    bolt11, payment_hash, _ = SIGNER.invoice(1_000)
    wrong = os.urandom(32).hex()
    details = {"payment_hash": payment_hash, "amount": 1_000, "status": "success"}
    script.answers[f"GET /api/v1/payments/{payment_hash}"] = (
        200,
        {"paid": True, "preimage": wrong, "details": details},
    )
    with pytest.raises(WalletUnavailable) as unavailable:
        await wallet.lookup_invoice(payment_hash)
    assert unavailable.value.reason == "bad_reply"

    script.answers[f"GET /api/v1/payments/{payment_hash}"] = (404, {"detail": "Payment does not exist."})
    script.answers["GET /api/v1/payments/fee-reserve"] = (200, {"fee_reserve": 0})
    script.answers["POST /api/v1/payments"] = (
        201,
        {"payment_hash": payment_hash, "status": "success", "preimage": wrong},
    )
    with pytest.raises(WalletUnavailable) as unavailable:
        await wallet.pay_invoice(bolt11, 1_000, "k")
    assert unavailable.value.reason == "bad_reply"
