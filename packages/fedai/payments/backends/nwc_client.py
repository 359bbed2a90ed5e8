"""The NIP-47 transport: one request to the wallet service over relays, its response, its error as ours.

Built on fedai's relay pool (`fedai.nostr.RelayPool`), which reconnects, re-subscribes and verifies every
event (id, signature) before a handler sees it. One subscription to the wallet's responses addressed to this
client (kind 23195, `#p` us) stays open; each request (kind 23194, `p` the wallet) waits for the response whose
`e` tag names it, signed by the wallet's key. The subscription is confirmed (EOSE) before the first request is
published, because responses are ephemeral: a relay forwards them only to subscriptions open at that moment.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fedai.nostr.pool import RelayPool
from fedai.nostr.subscription import Subscription
from fedai.payments.backends import nip47
from fedai.payments.backends.nwc_uri import NwcUri
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys

DEFAULT_TIMEOUT_S = 30.0
SINCE_MARGIN_S = 10
RESPONSE_BUDGET = (2_000, 60.0)  # responses accepted from the wallet's key per minute


class NwcClient:
    """Requests to one wallet service through its relays (`request(method, params)` → the `result` object)."""

    def __init__(self, uri: NwcUri, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.uri = uri
        self.timeout = timeout
        self.keys = Keys.parse(uri.secret.reveal())
        # every response comes from the one wallet key: a budget well above a busy payer's rate
        self._pool = RelayPool(list(uri.relays), connect_timeout=min(timeout, 5.0), author_budget=RESPONSE_BUDGET)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._responses: Subscription | None = None
        self._encryption: nip47.Encryption | None = None
        self._ready = asyncio.Lock()

    async def aclose(self) -> None:
        for future in self._pending.values():
            future.cancel()
        await self._pool.close()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its response; `WalletUnavailable` / `WalletRefused` as NIP-47 says."""
        scheme = await self._prepare()
        tags = [["p", self.uri.wallet_pubkey], ["expiration", str(int(time.time() + self.timeout + 60))]]
        if scheme is nip47.Encryption.NIP44:
            tags.append(["encryption", scheme.value])
        content = nip47.encrypt(self.keys, self.uri.wallet_pubkey, nip47.request_body(method, params), scheme)
        event = sign_event(self.keys, nip47.REQUEST_KIND, content, tags)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[event.id] = future
        try:
            published = await self._pool.publish(event, timeout=self.timeout)
            if not any(result.ok for result in published):
                raise WalletUnavailable(f"NWC {method}: no relay accepted the request", "unreachable")
            try:
                body = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise WalletUnavailable(f"NWC {method}: no answer within {self.timeout:.0f} s", "timeout") from None
        finally:
            self._pending.pop(event.id, None)
        return _result(method, body)

    async def _prepare(self) -> nip47.Encryption:
        """Connect, open the response subscription and learn the encryption, once (again after a failure)."""
        async with self._ready:
            await self._pool.start()
            if not await self._pool.wait_connected(self.timeout):
                raise WalletUnavailable("NWC: none of the wallet's relays can be reached", "unreachable")
            if self._responses is None:
                since = int(time.time()) - SINCE_MARGIN_S
                filters = {
                    "kinds": [nip47.RESPONSE_KIND],
                    "authors": [self.uri.wallet_pubkey],
                    "#p": [self.keys.pubkey],
                }
                sub = await self._pool.subscribe([filters | {"since": since}], self._on_response)
                if not await sub.wait_eose(self.timeout):
                    await sub.close()
                    raise WalletUnavailable("NWC: the relays did not confirm the subscription", "unreachable")
                self._responses = sub
            if self._encryption is None:
                self._encryption = await self._info_encryption()
            return self._encryption

    async def _info_encryption(self) -> nip47.Encryption:
        info: list[Event] = []

        async def keep(event: Event, _url: str) -> None:
            info.append(event)

        query = {"kinds": [nip47.INFO_KIND], "authors": [self.uri.wallet_pubkey], "limit": 1}
        sub = await self._pool.subscribe([query], keep)
        try:
            if not await sub.wait_eose(self.timeout):
                raise WalletUnavailable("NWC: the relays did not answer for the wallet's info event", "unreachable")
        finally:
            await sub.close()
        newest = max(info, key=lambda event: event.created_at, default=None)
        return nip47.chosen_encryption([list(tag) for tag in newest.tags] if newest else None)

    async def _on_response(self, event: Event, _url: str) -> None:
        if event.pubkey != self.uri.wallet_pubkey:
            return
        tags = [list(tag) for tag in event.tags]
        request_id = nip47.tag_value(tags, "e")
        future = self._pending.get(request_id or "")
        if future is None or future.done():
            return
        try:
            plaintext = nip47.decrypt(self.keys, event.pubkey, event.content)
            future.set_result(nip47.parse_object(plaintext))
        except nip47.Nip47Error as exc:
            future.set_exception(WalletUnavailable(f"nwc: unreadable response ({exc})", "bad_reply"))


def _result(method: str, body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    if error:
        code = str(error.get("code", "OTHER")) if isinstance(error, dict) else "OTHER"
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        known = code in nip47.UNAVAILABLE_REASONS or code in nip47.REFUSED_REASONS
        text = f"nwc: {method} answered {code if known else 'an unknown error code'}"
        if code in nip47.UNAVAILABLE_REASONS:
            raise WalletUnavailable(text, nip47.UNAVAILABLE_REASONS[code], detail=message)
        raise WalletRefused(text, nip47.REFUSED_REASONS.get(code, "rejected"), detail=message)
    result = body.get("result")
    if body.get("result_type") != method or not isinstance(result, dict):
        raise WalletUnavailable(f"nwc: the response is not a {method} result", "bad_reply")
    return result
