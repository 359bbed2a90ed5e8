"""A NIP-47 wallet service for tests: answers Nostr Wallet Connect requests from a real wallet (LNbits, or any
`Wallet`: one without `lookup_payment`, such as the LND backend, has its outgoing payments looked up from what
this service paid).

It does what a wallet service does (Alby Hub, an LNbits NWC extension): publishes its info event (kind 13194,
with the encryptions it speaks), listens on a relay for requests (kind 23194) addressed to it from the one
client key it authorised, runs each on its wallet, and answers (kind 23195, `e` the request) in the request's
encryption. Wallet errors become NIP-47 error codes. `encryptions_seen` records what each request used.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from fedai.nostr.pool import RelayPool
from fedai.payments.backends import nip47
from fedai.payments.backends.lnbits import LnbitsBackend
from fedai.payments.backends.nwc_uri import NwcUri
from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.secret import Secret
from fedai.payments.wallet import Payment, Wallet
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys

METHODS = ("make_invoice", "pay_invoice", "lookup_invoice", "get_balance")
MAX_FEE_MSAT = 50_000  # the connection's fee allowance in this service
REFUSED_CODES = {"insufficient_balance": "INSUFFICIENT_BALANCE", "unknown_invoice": "NOT_FOUND"}


class Nip47Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class NwcService:
    """One wallet service on `relay_url` for `wallet`; `client` is the key its connection URI hands out."""

    relay_url: str
    wallet: LnbitsBackend | Wallet
    encryptions: tuple[str, ...] = ("nip44_v2", "nip04")
    keys: Keys = field(default_factory=Keys.generate)
    client: Keys = field(default_factory=Keys.generate)
    encryptions_seen: list[str] = field(default_factory=list)
    paid: dict[str, Payment] = field(default_factory=dict)  # payment_hash → what this service paid
    _pool: RelayPool | None = None

    @property
    def uri(self) -> NwcUri:
        return NwcUri(self.keys.pubkey, (self.relay_url,), Secret(self.client.secret_hex))

    async def start(self) -> NwcService:
        self._pool = RelayPool([self.relay_url])
        await self._pool.start()
        assert await self._pool.wait_connected(10)
        tags = [["encryption", " ".join(self.encryptions)]] if self.encryptions != ("nip04",) else []
        await self._pool.publish(sign_event(self.keys, nip47.INFO_KIND, " ".join(METHODS), tags))
        since = int(time.time()) - 10
        query = {"kinds": [nip47.REQUEST_KIND], "#p": [self.keys.pubkey], "since": since}
        sub = await self._pool.subscribe([query], self._on_request)
        assert await sub.wait_eose(10)
        return self

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _on_request(self, event: Event, _url: str) -> None:
        assert self._pool is not None
        tags = [list(tag) for tag in event.tags]
        scheme = nip47.Encryption(nip47.tag_value(tags, "encryption") or "nip04")
        self.encryptions_seen.append(scheme.value)
        method = "unknown"
        try:
            body = nip47.parse_object(nip47.decrypt(self.keys, event.pubkey, event.content))
            method = str(body.get("method"))
            if event.pubkey != self.client.pubkey:
                raise Nip47Failure("UNAUTHORIZED", "no wallet connected for this key")
            answer: dict[str, Any] = {"result_type": method, "error": None, "result": await self._run(method, body)}
        except Nip47Failure as failure:
            answer = {"result_type": method, "error": {"code": failure.code, "message": str(failure)}}
        content = nip47.encrypt(self.keys, event.pubkey, json.dumps(answer), scheme)
        reply = sign_event(self.keys, nip47.RESPONSE_KIND, content, [["p", event.pubkey], ["e", event.id]])
        await self._pool.publish(reply)

    async def _run(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        params = body.get("params") or {}
        try:
            if method == "make_invoice":
                made = await self.wallet.create_invoice(
                    params["amount"], params.get("description", ""), params.get("expiry", 3600), f"nwc-{time.time_ns()}"
                )
                return {
                    "type": "incoming",
                    "invoice": made.bolt11,
                    "payment_hash": made.payment_hash,
                    "amount": made.amount_msat,
                    "expires_at": made.expires_at,
                }
            if method == "pay_invoice":
                paid = await self.wallet.pay_invoice(params["invoice"], MAX_FEE_MSAT, f"nwc-{time.time_ns()}")
                self.paid[paid.payment_hash] = paid
                return {"preimage": paid.preimage, "fees_paid": paid.fee_msat}
            if method == "lookup_invoice":
                return await self._lookup(params["payment_hash"])
            if method == "get_balance":
                return {"balance": await self.wallet.balance_msat()}
        except WalletRefused as refused:
            code = REFUSED_CODES.get(refused.reason, "PAYMENT_FAILED" if method == "pay_invoice" else "OTHER")
            raise Nip47Failure(code, refused.message) from None
        except WalletUnavailable as unavailable:
            raise Nip47Failure("INTERNAL", unavailable.message) from None
        raise Nip47Failure("NOT_IMPLEMENTED", f"{method} is not offered")

    async def _lookup(self, payment_hash: str) -> dict[str, Any]:
        try:
            status = await self.wallet.lookup_invoice(payment_hash)
        except WalletRefused as refused:
            if refused.reason != "unknown_invoice":
                raise
            lookup = getattr(self.wallet, "lookup_payment", None)
            paid = self.paid.get(payment_hash) if lookup is None else await lookup(payment_hash)
            if paid is None:
                raise
            return {
                "type": "outgoing",
                "payment_hash": payment_hash,
                "preimage": paid.preimage,
                "fees_paid": paid.fee_msat,
                "settled_at": int(time.time()),
                "state": "settled",
            }
        settled = {"settled_at": int(time.time()), "preimage": status.preimage} if status.preimage else {}
        return {
            "type": "incoming",
            "payment_hash": payment_hash,
            "amount": status.amount_msat,
            "state": "settled" if status.preimage else status.state.value,
            **settled,
        }
