"""An invoice from the client's refund destination (docs/payments.md#refunds), checked before anyone pays it.

- NWC: a `make_invoice` request to the client's wallet service over its relays.
- LNURL-pay (LUD-06, LUD-16 addresses): two HTTP GETs to the destination's domain, through `fetch`, which the
  service supplies so that its own outbound rules apply (the router's SSRF-safe connector: no private
  addresses unless allowed, no redirects). The invoice must be for exactly the amount, on our network.

Errors are `DestinationError` with a short `reason` and a message that never quotes the destination.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from fedai.payments.backends.nwc import NwcBackend
from fedai.payments.backends.nwc_uri import parse_nwc_uri
from fedai.payments.errors import WalletError
from fedai.payments.invoice import check_invoice
from fedai.payments.refund import Destination

FetchJson = Callable[[str], Awaitable[Any]]  # GET a URL, its JSON body (raises on transport errors)
REFUND_INVOICE_EXPIRY_S = 3600
NWC_TIMEOUT_S = 20.0


class DestinationError(Exception):
    """The destination gave no usable invoice. `reason`: unreachable, bad_reply, refused, out_of_range,
    bad_invoice (one word, for logs and metrics; the message never names the destination)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DestinationInvoices:
    """Asks destinations for invoices; `allow_http` only for loopback tests."""

    def __init__(self, fetch: FetchJson, *, network: str, allow_http: bool = False) -> None:
        self._fetch = fetch
        self._network = network
        self._allow_http = allow_http

    async def invoice(self, destination: Destination, amount_msat: int, memo: str, key: str, now: float) -> str:
        if destination.kind == "nwc":
            bolt11 = await self._from_nwc(destination.target, amount_msat, memo, key)
        else:
            bolt11 = await self._from_lnurl(destination.target, amount_msat)
        try:
            check_invoice(bolt11, amount_msat=amount_msat, network=self._network, now=now)
        except WalletError as exc:
            raise DestinationError("bad_invoice", f"the destination's invoice fails its check ({exc.reason})") from None
        return bolt11

    async def _from_nwc(self, uri: str, amount_msat: int, memo: str, key: str) -> str:
        wallet = NwcBackend(parse_nwc_uri(uri), network=self._network, timeout=NWC_TIMEOUT_S)
        try:
            made = await wallet.create_invoice(amount_msat, memo, REFUND_INVOICE_EXPIRY_S, key)
        except WalletError as exc:
            raise DestinationError("unreachable", f"the destination wallet made no invoice ({exc.reason})") from None
        finally:
            await wallet.aclose()
        return made.bolt11

    async def _from_lnurl(self, url: str, amount_msat: int) -> str:
        offer = await self._get(url)
        if not isinstance(offer, dict) or offer.get("tag") != "payRequest":
            raise DestinationError(_status_reason(offer), "the destination is not an LNURL-pay service")
        low, high, callback = offer.get("minSendable"), offer.get("maxSendable"), offer.get("callback")
        if not (isinstance(low, int) and isinstance(high, int) and isinstance(callback, str)):
            raise DestinationError("bad_reply", "the destination's LNURL-pay answer lacks its fields")
        if not low <= amount_msat <= high:
            raise DestinationError("out_of_range", "the destination does not accept this amount")
        self._check_url(callback)
        joiner = "&" if urlsplit(callback).query else "?"
        answer = await self._get(f"{callback}{joiner}{urlencode({'amount': amount_msat})}")
        bolt11 = answer.get("pr") if isinstance(answer, dict) else None
        if not isinstance(bolt11, str):
            raise DestinationError(_status_reason(answer), "the destination's callback gave no invoice")
        return bolt11

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        allowed = ("https", "http") if self._allow_http else ("https",)
        if parts.scheme not in allowed or not parts.netloc or parts.username:
            raise DestinationError("bad_reply", "the destination's callback is not an https URL")

    async def _get(self, url: str) -> Any:
        try:
            return await self._fetch(url)
        except DestinationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a third party's server: retried later
            raise DestinationError(
                "unreachable", f"the destination could not be reached ({type(exc).__name__})"
            ) from None


def _status_reason(answer: object) -> str:
    """LUD-06 errors are {"status": "ERROR", "reason": …}: a refusal; anything else is a bad reply."""
    if isinstance(answer, dict) and answer.get("status") == "ERROR":
        return "refused"
    return "bad_reply"
