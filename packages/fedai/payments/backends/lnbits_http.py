"""LNbits' REST calls for the LNbits backend: the key header, timeouts, and LNbits' answers as wallet errors.

- no answer (refused, timed out, a broken connection), a 5xx other than 520, or an answer that is not JSON:
  `WalletUnavailable` (a paying call that timed out may still have paid: the backend looks first when retried);
- 401/403, or a wallet LNbits does not know (the key is wrong or revoked): `WalletUnavailable` `unauthorized`;
- 520 (LNbits' payment error) and 400: `WalletRefused`, `insufficient_balance` when LNbits says so;
- 404 of a payment: as the caller asks (`unknown_invoice`, or no payment).
The key goes in `X-Api-Key` and nowhere else: errors name the call and LNbits' `detail`, never the key or URL query.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.secret import Secret

Missing = Literal["unavailable", "unknown_invoice", "none"]
PAYMENT_ERROR = 520  # LNbits answers a refused payment or invoice with 520 and a `detail`
MAX_DETAIL = 160


class LnbitsHttp:
    """One LNbits wallet's HTTP client (`url`: the LNbits base URL, with a path prefix if it is behind one)."""

    def __init__(
        self, url: str, key: Secret, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("LNbits URL must be http(s)://host[:port][/path]")
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        base = f"{self.origin}{parts.path.rstrip('/')}"
        headers = {"X-Api-Key": key.reveal()}
        self._client = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, *, params: dict[str, Any] | None = None, missing: Missing = "unavailable") -> Any:
        return await self._call("GET", path, params=params, missing=missing)

    async def post(self, path: str, body: dict[str, Any], *, paying: bool = False) -> Any:
        return await self._call("POST", path, body=body, paying=paying)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        missing: Missing = "unavailable",
        paying: bool = False,
    ) -> Any:
        what = f"LNbits {method} {path.split('?')[0][:60]}"
        try:
            response = await self._client.request(method, path, params=params, json=body)
        except httpx.TimeoutException:
            raise WalletUnavailable(f"{what}: no answer in time", "timeout") from None
        except httpx.HTTPError as exc:
            raise WalletUnavailable(f"{what}: {type(exc).__name__} reaching {self.origin}", "unreachable") from None
        if response.status_code == 404 and missing != "unavailable":
            if missing == "none":
                return {}
            raise WalletRefused(f"{what}: this wallet has no such invoice", "unknown_invoice")
        _raise_for_status(what, response, paying=paying)
        try:
            return response.json()
        except ValueError:
            raise WalletUnavailable(f"{what}: the answer is not JSON", "bad_response") from None


def _raise_for_status(what: str, response: httpx.Response, *, paying: bool) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = _detail(response)
    if status in (401, 403, 404):
        raise WalletUnavailable(f"{what}: LNbits refused the key (HTTP {status}: {detail})", "unauthorized")
    if status in (400, PAYMENT_ERROR):
        if "insufficient balance" in detail.lower():
            raise WalletRefused(f"{what}: insufficient balance", "insufficient_balance")
        reason = "payment_failed" if paying else "invoice_rejected"
        raise WalletRefused(f"{what}: LNbits refused (HTTP {status}: {detail})", reason)
    raise WalletUnavailable(f"{what}: HTTP {status} {detail}".rstrip(), "unavailable")


def _detail(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return ""
    detail = answer.get("detail", "") if isinstance(answer, dict) else ""
    return " ".join(str(detail).split())[:MAX_DETAIL]
