"""What the request path may ask of federation: whether a request may leave this router, to serve it through a
peer, and, for a paying router, a peer's job priced, invoiced and run with the client's payment
(docs/payments.md#federation-settlement). `fedai_router.federation` implements it; the request path knows only
this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.messages import InferenceRequest, Payee, PaymentRequest, Settlement, decode_payload
from fedai.protocol.payment import invalid
from fedai_router.completion import Origin
from fedai_router.store.offload_quotes import WonJob

__all__ = ["OFFLOADABLE", "Offloader", "PaidJob", "WonJob", "provider_entry"]

OFFLOADABLE = (ErrorCode.UNKNOWN_MODEL, ErrorCode.NO_CAPACITY)  # no node of ours fits, or all are busy


def provider_entry(payment_request: Event, provider: str) -> Payee:
    """The provider's entry of a payment request this router issued (and checked when it issued it)."""
    request = decode_payload(payment_request.content, PaymentRequest)
    entry = next((p for p in request.payees if p.role == "provider" and p.payee == provider), None)
    if entry is None:
        raise invalid("the payment request pays no invoice of the quote's provider")
    return entry


@dataclass(frozen=True, slots=True)
class PaidJob:
    """What a paid offload is submitted with: the payment request the client paid (router-signed), the client's
    preimage of the provider's invoice, the client's `refund_to` as it signed it in its proof (the provider
    refunds there; the client's chain check refuses a submit carrying another), and how this router states its
    fee once the provider's receipt prices the work (None: no statement)."""

    request: Event | None  # None only for a job paid outside the client flow (then the answer carries none)
    preimage: str
    refund_to: str | None = None
    fee_statement: Callable[[int], Settlement | None] | None = None


class Offloader(Protocol):
    def can_offload(self, request: InferenceRequest) -> bool:
        """Federation is on and `request` may leave this router (privacy)."""
        ...

    async def offload(self, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
        """Serve `request` through a peer and answer the client; raise `local` (why we could not serve it
        ourselves) if no peer can."""
        ...

    async def win_job(self, request: InferenceRequest, *, hold_s: int, key: str) -> WonJob | None:
        """Auction exactly `request`'s job to peers that take Lightning, its award valid `hold_s` longer than a
        job's own time (the client pays in between); None when no peer won it."""
        ...

    async def provider_invoice(self, job: WonJob, *, quote: str, client: str, expires_at: int) -> Payee:
        """The winner's own checked invoice for `job` (role `provider`), listed for `client`'s `quote`."""
        ...

    async def run_paid(self, origin: Origin, request: InferenceRequest, job: WonJob, paid: PaidJob) -> Event:
        """Submit `job` with the client's proof of paying the provider's invoice of `paid.request` (the provider's
        preimage, the client's refund destination) and answer `origin` with our fee's statement; the receipt
        must name the payment hash and state the provider's settlement of it."""
        ...
