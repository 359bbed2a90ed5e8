"""Federation settlement, the requester's side (docs/federation.md#settlement): ask the winner of an award for its
own invoice (`POST /federation/invoice`, signed both ways) and check it before anyone pays it: signed by the
winner, role `provider`, bound to this award, this router, the client and quote it will be listed for, for exactly
the bid's price, a valid BOLT11 invoice on our network for that amount and payment hash. The requester router
never pays it from its own wallet: the client pays it (it is listed in the client's payment request in place of
a node), and the preimage travels in the job.submit (`JobSubmit.payment`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from fedai.payments.errors import InvalidInvoice
from fedai.payments.invoice import check_invoice
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InvoiceRequest, Payee, PayeeInvoice
from fedai_router.federation.auction import Awarded
from fedai_router.outbound import Outbound

MAX_INVOICE_EVENT_BYTES = 16 * 1024
MIN_INVOICE_EXPIRY_S = 10


@dataclass(frozen=True, slots=True)
class InvoiceFor:
    """Whom the provider's invoice will be listed for: the client's quote and key, until `expires_at`."""

    quote: str
    client: str
    expires_at: int


def invoice_problem(got: PayeeInvoice, awarded: Awarded, router: str, wanted: InvoiceFor) -> str | None:
    """How the provider's invoice differs from what was asked, or None. Pure."""
    asked = ("provider", awarded.award.id, router, wanted.quote, wanted.client, awarded.bid_payload.price_msat)
    if (got.role, got.award, got.router, got.quote, got.client, got.amount_msat) != asked:
        return "the provider's invoice is not for what was asked (role, award, router, quote, client or amount)"
    if got.expires_at > wanted.expires_at:
        return "the provider's invoice outlives the payment request"
    return None


async def ask_provider_invoice(
    keys: Keys,
    outbound: Outbound,
    endpoint: str,
    awarded: Awarded,
    wanted: InvoiceFor,
    *,
    network: str,
    timeout_s: float,
) -> Payee:
    """The winner's checked invoice for `awarded`, as the payee entry (role `provider`) of a payment request."""
    ask = InvoiceRequest(
        quote=wanted.quote,
        client=wanted.client,
        router=keys.pubkey,
        amount_msat=awarded.bid_payload.price_msat,
        expires_at=wanted.expires_at,
        award=awarded.award.id,
    )
    sealed = seal(keys, Kind.INVOICE_REQUEST, ask, to=awarded.peer, nonce=True, expiration=wanted.expires_at)
    body = await outbound.exchange(
        endpoint + "/federation/invoice",
        sealed,
        target="peer",
        client_timeout=aiohttp.ClientTimeout(total=timeout_s),
        limit=MAX_INVOICE_EVENT_BYTES,
    )
    try:
        event = decode_event(body, MAX_INVOICE_EVENT_BYTES)
        got = open_event(event, PayeeInvoice, kinds=(Kind.PAYMENT_INVOICE,), signers=(awarded.peer,), skew_s=None)
    except FedaiError as err:
        raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"the provider's invoice does not verify: {err.message}") from None
    problem = invoice_problem(got.payload, awarded, keys.pubkey, wanted)
    if problem is not None:
        raise FedaiError(ErrorCode.UPSTREAM_ERROR, problem)
    _check_bolt11(got.payload, network)
    return _payee(event, got.payload, awarded.peer)


def _check_bolt11(invoice: PayeeInvoice, network: str) -> None:
    try:
        check_invoice(
            invoice.bolt11,
            amount_msat=invoice.amount_msat,
            network=network,
            now=time.time(),
            payment_hash=invoice.payment_hash,
            min_expiry_s=MIN_INVOICE_EXPIRY_S,
        )
    except InvalidInvoice as err:
        raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"the provider's invoice fails a check ({err.reason})") from None


def _payee(event: Event, invoice: PayeeInvoice, provider: str) -> Payee:
    return Payee(
        role="provider",
        payee=provider,
        amount_msat=invoice.amount_msat,
        bolt11=invoice.bolt11,
        payment_hash=invoice.payment_hash,
        invoice=event,
    )
