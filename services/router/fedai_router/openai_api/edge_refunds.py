"""Refunds at the OpenAI edge (docs/payments.md#the-openai-edge, #refunds): where a call paid from a caller's bound
wallet gets the unused part of each share back.

The destination is the caller's own bound wallet, asked for an invoice (NIP-47 `make_invoice`) through the
connection the router already holds. That connection's URI is never the `refund_to` itself: it can spend (the
router pays through it), and `refund_to` travels to the node in the forwarded request and is stored with the chain
and the refunds. Instead the router gives each paid call an LNURL-pay link it serves,
`<ROUTER_PUBLIC_URL>/refunds/lnurlp/<token>`, a random token naming the payment request and the binding that paid
it (`edge_refund_links`, migrations/0015). The node and the router refund to that link exactly as to any LNURL-pay
destination; its callback answers an invoice made by the bound wallet, for at most the request's total. Money
still moves wallet to wallet: the payee's wallet pays the caller's wallet's invoice.

Links are offered when the router's public URL is https (nodes reach only public https destinations), or when
ROUTER_EDGE_REFUNDS says so (`true` also over http, for loopback tests; `false` never).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fedai.payments.errors import WalletError
from fedai.store.db import UNAVAILABLE
from fedai_router.client_wallets import ClientWallets, WalletBinding

log = logging.getLogger("fedai.router.payments")

PATH = "/refunds/lnurlp"
INVOICE_EXPIRY_S = 3600
TOKEN = re.compile(r"[0-9a-f]{64}")
METADATA = json.dumps([["text/plain", "fedai refund"]])

_LINK = """
INSERT INTO edge_refund_links (token, request_id, binding, max_msat) VALUES ($1, $2, $3, $4)
ON CONFLICT (request_id) DO UPDATE SET request_id = EXCLUDED.request_id
RETURNING token
"""
_FIND = "SELECT binding, max_msat FROM edge_refund_links WHERE token = $1"
_TAKE = """
UPDATE edge_refund_links SET invoices = invoices + 1 WHERE token = $1 AND invoices < $2 RETURNING binding, max_msat
"""
MAX_INVOICES = 16  # invoices one link makes in all: a payee asks once per refund (again after a failed attempt)


def offers_links(public_url: str | None, setting: bool | None) -> bool:
    """Whether paid edge calls get a refund link: ROUTER_EDGE_REFUNDS if set, else an https ROUTER_PUBLIC_URL."""
    if not public_url or setting is False:
        return False
    return setting is True or public_url.startswith("https://")


def _refused(reason: str) -> Response:
    """LUD-06's error answer: the payer sees a refusal (and retries later), never a detail of the wallet."""
    return JSONResponse({"status": "ERROR", "reason": reason})


def _unavailable() -> Response:
    """The database is down: the payer's attempt fails as `unreachable` and is retried."""
    return JSONResponse({"status": "ERROR", "reason": "temporarily unavailable"}, status_code=503)


class EdgeRefunds:
    """The refund links of paid edge calls, and the LNURL-pay endpoints that serve them."""

    def __init__(self, pool: asyncpg.Pool, wallets: ClientWallets, public_url: str) -> None:
        self._pool = pool
        self._wallets = wallets
        self._base = public_url.rstrip("/") + PATH

    async def link(self, request_id: str, binding: WalletBinding, max_msat: int) -> str:
        """The refund destination of payment request `request_id`, paid from `binding`'s wallet (one link each)."""
        token = await self._pool.fetchval(_LINK, secrets.token_hex(32), request_id, binding.id, max_msat)
        return f"{self._base}/{token}"

    async def _find(self, request: Request, *, taking: bool) -> tuple[WalletBinding, int] | None:
        """The link's binding and bound; `taking` counts one more invoice (None once it made MAX_INVOICES)."""
        token = str(request.path_params["token"])
        if not TOKEN.fullmatch(token):
            return None
        if taking:
            row = await self._pool.fetchrow(_TAKE, token, MAX_INVOICES)
        else:
            row = await self._pool.fetchrow(_FIND, token)
        binding = None if row is None else self._wallets.bindings.get(row["binding"])
        return None if row is None or binding is None else (binding, int(row["max_msat"]))

    async def offer(self, request: Request) -> Response:
        """`GET /refunds/lnurlp/{token}`: the LNURL-pay offer (LUD-06)."""
        try:
            found = await self._find(request, taking=False)
        except UNAVAILABLE:
            return _unavailable()
        if found is None:
            return _refused("no such refund link")
        return JSONResponse(
            {
                "tag": "payRequest",
                "callback": f"{self._base}/{request.path_params['token']}/callback",
                "minSendable": 1,
                "maxSendable": found[1],
                "metadata": METADATA,
            }
        )

    async def callback(self, request: Request) -> Response:
        """`GET /refunds/lnurlp/{token}/callback?amount=MSAT`: an invoice from the caller's bound wallet."""
        amount = _amount(request.query_params.get("amount"))
        if amount is None:
            return _refused("amount out of range")
        try:
            found = await self._find(request, taking=True)
        except UNAVAILABLE:
            return _unavailable()
        if found is None:
            return _refused("no such refund link, or it made all its invoices")
        binding, max_msat = found
        if not 1 <= amount <= max_msat:
            return _refused("amount out of range")
        wallet = await self._wallets.wallet(binding)
        try:
            made = await wallet.create_invoice(amount, "fedai refund", INVOICE_EXPIRY_S, secrets.token_hex(16))
        except WalletError as exc:
            log.warning("refund link: the bound wallet made no invoice", extra={"reason": exc.reason})
            return _refused("the wallet made no invoice")
        body: dict[str, Any] = {"pr": made.bolt11, "routes": []}
        return JSONResponse(body)


def _amount(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) <= 15 else None
