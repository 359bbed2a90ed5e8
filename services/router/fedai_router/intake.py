"""Opening what callers send: an envelope addressed to this router, checked by every rule but replay, then its
signer rate-limited; a client's envelope also meets the client allowlist and blocklist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from fedai.protocol.envelope import Opened, open_envelope
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import Payload
from fedai_router.ratelimit import RateLimiter

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class Intake:
    pubkey: str  # this router: envelopes must be addressed to it
    limiter: RateLimiter  # per signer
    max_request_bytes: int
    skew_s: int
    client_allowlist: frozenset[str] = frozenset()  # empty: any client
    client_blocklist: frozenset[str] = frozenset()

    def open_addressed(
        self,
        body: bytes,
        cls: type[P],
        kind: int,
        *,
        signers: frozenset[str] | None = None,
        max_bytes: int | None = None,
    ) -> Opened[P]:
        """Open an envelope of `kind` addressed to this router (every rule but replay), then rate-limit its signer."""
        opened = open_envelope(
            body,
            cls,
            kinds=(kind,),
            recipient=self.pubkey,
            signers=signers,
            max_bytes=max_bytes or self.max_request_bytes,
            skew_s=self.skew_s,
        )
        self.limiter.check(opened.event.pubkey)
        return opened

    def open_client(self, body: bytes, cls: type[P], kind: int) -> Opened[P]:
        """A client's envelope: client allowlist and blocklist, then the rate limit."""
        opened = self.open_addressed(body, cls, kind, signers=self.client_allowlist or None)
        if opened.event.pubkey in self.client_blocklist:
            raise FedaiError(ErrorCode.FORBIDDEN, "this client key is blocked")
        return opened
