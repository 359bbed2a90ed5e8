"""LNbits' REST calls for the LNbits backend, on the shared plumbing (`fedai.payments.backends.http`: TLS,
no redirects, no proxies from the environment, bounded answers), and LNbits' answers as wallet errors:

- 401/403, or a wallet LNbits does not know (404 outside a payment lookup: the key is wrong or revoked):
  `WalletUnavailable` `unauthorized`;
- 520 (LNbits' payment error) and 400: `WalletRefused`, `insufficient_balance` when LNbits says so;
- any other status above 299: `WalletUnavailable` `backend_error`;
- 404 of a payment: as the caller asks (`unknown_invoice`, or no payment).
The key goes in `X-Api-Key` only; LNbits' own words go in the error's `detail`, never in its message.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fedai.payments.backends.http import Reply, RestClient
from fedai.payments.errors import WalletRefused, WalletUnavailable

Missing = Literal["unavailable", "unknown_invoice", "none"]
PAYMENT_ERROR = 520  # LNbits answers a refused payment or invoice with 520 and a `detail`


class LnbitsHttp:
    """One LNbits wallet's calls: JSON in, JSON out, statuses as wallet errors."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest
        self.name = rest.name

    async def aclose(self) -> None:
        await self._rest.aclose()

    async def get(self, path: str, *, params: dict[str, Any] | None = None, missing: Missing = "unavailable") -> Any:
        query = f"?{urlencode(params)}" if params else ""
        reply = await self._rest.call("GET", f"{path}{query}")
        if reply.status == 404 and missing != "unavailable":
            if missing == "none":
                return {}
            raise WalletRefused(f"{self.name}: this wallet has no such invoice", "unknown_invoice")
        return self._body(reply, paying=False)

    async def post(self, path: str, body: dict[str, Any], *, paying: bool = False) -> Any:
        return self._body(await self._rest.call("POST", path, body), paying=paying)

    def _body(self, reply: Reply, *, paying: bool) -> Any:
        status = reply.status
        if status < 300:
            return reply.body
        detail = _detail(reply)
        if status in (401, 403, 404):
            raise WalletUnavailable(f"{self.name}: the key was refused (HTTP {status})", "unauthorized", detail)
        if status in (400, PAYMENT_ERROR):
            if "insufficient balance" in detail.lower():
                raise WalletRefused(f"{self.name}: insufficient balance", "insufficient_balance", detail)
            reason = "payment_failed" if paying else "invoice_rejected"
            raise WalletRefused(f"{self.name}: refused (HTTP {status})", reason, detail)
        raise WalletUnavailable(f"{self.name}: failed (HTTP {status})", "backend_error", detail)


def _detail(reply: Reply) -> str:
    body = reply.body
    return str(body.get("detail", "")) if isinstance(body, dict) else ""
