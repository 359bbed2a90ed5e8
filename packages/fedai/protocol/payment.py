"""Payment checks, pure (docs/payments.md#protocol-and-claims): a router-signed payment request binds a quote,
a client, the router and an expiry to the payees' own signed invoices; a preimage proves an invoice paid.

`check_payment_request` is what the client (before paying), the router (at `/infer`) and the node (on the
forwarded proof) run on a payment request; `check_proof` checks one payee's preimage, `check_all_proofs`
every payee's. Every failure is a `FedaiError`: `payment_invalid` (402) or `payment_expired` (402).
`ClaimOutcome` names what the single-use stores answer and `claim_error` the error each refusal becomes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fedai.protocol.envelope import Opened, check_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    ForwardedPayment,
    Payee,
    PayeeInvoice,
    Payload,
    PaymentProof,
    PaymentRequest,
    QuoteResponse,
    decode_payload,
)

P = TypeVar("P", bound=Payload)

WORK_ROLES = ("node", "provider")  # exactly one payee is paid for the work


@dataclass(frozen=True, slots=True)
class QuoteTerms:
    """What a payment request must match of its quote: the router builds it from its stored quote, the client
    from the signed quote it holds (`from_response`). A node, which never sees the quote, passes its id only."""

    quote_id: str
    node: str | None
    node_msat: int  # input_msat + output_msat: the work's ceiling (a provider's: its bid)
    router_fee_msat: int
    total_msat: int
    expires_at: int
    provider: str | None = None  # a peer router won the job: it is the work's payee, role `provider`

    @classmethod
    def from_response(cls, quote: QuoteResponse) -> QuoteTerms:
        p = quote.price
        return cls(
            quote.quote_id,
            quote.node,
            p.input_msat + p.output_msat,
            p.router_fee_msat,
            p.total_msat,
            quote.expires_at,
            quote.provider,
        )


def invalid(message: str) -> FedaiError:
    return FedaiError(ErrorCode.PAYMENT_INVALID, message)


def _nested(event: Event, kind: Kind, signer: str, what: str, now: float) -> None:
    """A nested, archived event: right kind, signed by `signer`, id and signature valid (no freshness check)."""
    if event.pubkey != signer:
        raise invalid(f"{what} is not signed by the expected key")
    try:
        check_event(event, kinds=(kind,), skew_s=None, now=now)
    except FedaiError as err:
        raise invalid(f"{what}: {err.message}") from None


def _decode(event: Event, cls: type[P], what: str) -> P:
    try:
        return decode_payload(event.content, cls)
    except FedaiError as err:
        raise invalid(f"{what}: {err.message}") from None


def check_payment_request(
    event: Event,
    *,
    router: str,
    client: str,
    quote: QuoteTerms | str,
    now: float,
    provider: str | None = None,
) -> Opened[PaymentRequest]:
    """Check a payment request end to end: signed by `router`, for `client` and this quote, not expired, every
    payee's invoice signed by that payee and equal to its entry, the amounts the quote's split.

    `quote` is the quote's terms, or only its id where the quote is unknown (a node): the split is then not
    checked, the rest is. `provider` names the provider router when the work was offloaded: it is then the
    work's payee in place of the quote's node."""
    if event.kind != Kind.PAYMENT_REQUEST:
        raise invalid(f"kind {event.kind} is not a payment request")
    _check_expiry(event, now)
    _nested(event, Kind.PAYMENT_REQUEST, router, "payment request", now)
    if event.tag_values("p") != [client]:
        raise invalid("payment request is not addressed to this client")
    request = _decode(event, PaymentRequest, "payment request")
    quote_id = quote if isinstance(quote, str) else quote.quote_id
    if request.router != router or request.client != client or request.quote != quote_id:
        raise invalid("payment request is for another router, client or quote")
    if request.expires_at <= now:
        raise FedaiError(ErrorCode.PAYMENT_EXPIRED, "payment request expired")
    _check_payees(request, now)
    if not isinstance(quote, str):
        _check_split(request, quote, provider)
    return Opened(event, request)


def _check_expiry(event: Event, now: float) -> None:
    """The NIP-40 tag, when present, is the payload's expiry; past it the code is `payment_expired`."""
    tag = event.tag("expiration")
    if tag is None:
        return
    try:
        expires = int(tag)
    except ValueError:
        raise invalid("payment request's expiration tag is not an integer") from None
    if expires <= now:
        raise FedaiError(ErrorCode.PAYMENT_EXPIRED, "payment request expired")


def _check_payees(request: PaymentRequest, now: float) -> None:
    hashes = {p.payment_hash for p in request.payees}
    if len(hashes) != len(request.payees):
        raise invalid("two payees share a payment hash")
    if sum(p.amount_msat for p in request.payees) != request.total_msat:
        raise invalid("payees' amounts do not sum to the total")
    roles = [p.role for p in request.payees]
    if sum(r in WORK_ROLES for r in roles) != 1 or roles.count("router_fee") > 1:
        raise invalid("a payment request pays exactly one node or provider and at most one router fee")
    for payee in request.payees:
        if payee.role == "router_fee" and payee.payee != request.router:
            raise invalid("the router fee is not payable to the router")
        _check_invoice(payee, request, now)


def _check_invoice(payee: Payee, request: PaymentRequest, now: float) -> None:
    """The payee's own signed invoice says exactly what its entry says, for this quote, client and router."""
    _nested(payee.invoice, Kind.PAYMENT_INVOICE, payee.payee, f"{payee.role} invoice", now)
    invoice = _decode(payee.invoice, PayeeInvoice, f"{payee.role} invoice")
    same = (
        invoice.role == payee.role
        and invoice.amount_msat == payee.amount_msat
        and invoice.payment_hash == payee.payment_hash
        and invoice.bolt11 == payee.bolt11
    )
    if not same:
        raise invalid(f"{payee.role} invoice differs from its entry (role, amount, payment hash or bolt11)")
    if invoice.quote != request.quote or invoice.client != request.client or invoice.router != request.router:
        raise invalid(f"{payee.role} invoice is for another quote, client or router")
    if invoice.expires_at > request.expires_at:
        raise invalid(f"{payee.role} invoice outlives the payment request (it could be paid after it expires)")


def _check_split(request: PaymentRequest, quote: QuoteTerms, provider: str | None) -> None:
    """The amounts are the quote's ceiling split: the work's share to the node (or provider), the fee to us."""
    if request.total_msat != quote.total_msat or request.expires_at > quote.expires_at:
        raise invalid("payment request's total or expiry differs from its quote")
    work = next(p for p in request.payees if p.role in WORK_ROLES)
    provider = provider if provider is not None else quote.provider
    expected = ("provider", provider) if provider is not None else ("node", quote.node)
    if (work.role, work.payee) != expected:
        raise invalid("the work is payable to another payee than the quote's")
    if work.amount_msat != quote.node_msat:
        raise invalid("the work's amount differs from the quote's share")
    fee = sum(p.amount_msat for p in request.payees if p.role == "router_fee")
    if fee != quote.router_fee_msat:
        raise invalid("the router fee differs from the quote's")


def preimage_matches(preimage: str, payment_hash: str) -> bool:
    """sha256(preimage) = payment_hash, both 32 bytes of lowercase hex."""
    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash
    except ValueError:
        return False


def _proof_binding(request: Opened[PaymentRequest], proof: PaymentProof) -> None:
    if proof.payment_request != request.event.id:
        raise invalid("proof is for another payment request")
    hashes = {p.payment_hash for p in request.payload.payees}
    if not set(proof.preimages) <= hashes:
        raise invalid("proof carries a preimage for an invoice this payment request does not list")


def _proven(payee: Payee, preimages: dict[str, str]) -> None:
    preimage = preimages.get(payee.payment_hash)
    if preimage is None:
        raise invalid(f"proof has no preimage for the {payee.role} invoice")
    if not preimage_matches(preimage, payee.payment_hash):
        raise invalid(f"preimage does not match the {payee.role} invoice's payment hash")


def check_proof(request: Opened[PaymentRequest], proof: PaymentProof, *, role: str, payee: str) -> Payee:
    """The proof is for this (already checked) payment request and carries the preimage of `payee`'s invoice
    in `role`. Returns that payee's entry."""
    _proof_binding(request, proof)
    entry = payee_entry(request.payload, role=role, payee=payee)
    _proven(entry, proof.preimages)
    return entry


def check_all_proofs(request: Opened[PaymentRequest], proof: PaymentProof) -> list[str]:
    """Every payee's invoice is proven paid. Returns the payment hashes (to claim, all at once)."""
    _proof_binding(request, proof)
    for entry in request.payload.payees:
        _proven(entry, proof.preimages)
    return [p.payment_hash for p in request.payload.payees]


def check_forwarded(
    forwarded: ForwardedPayment, *, payee: str, router: str, client: str, quote_id: str, now: float
) -> Payee:
    """A node's (or provider's) check of the proof a router forwarded: the payment request is the forwarding
    router's, for this client and quote, unexpired, and the preimage is of `payee`'s own invoice. Whether that
    invoice is settled in the payee's wallet, and for at least its share, is the payee's next check."""
    request = check_payment_request(forwarded.request, router=router, client=client, quote=quote_id, now=now)
    entry = next((p for p in request.payload.payees if p.payee == payee and p.role in WORK_ROLES), None)
    if entry is None:
        raise invalid("payment request pays no invoice of this payee")
    _proven(entry, {entry.payment_hash: forwarded.preimage})
    return entry


def seal_invoice(keys: Keys, invoice: PayeeInvoice) -> Event:
    """A payee signs its own invoice (kind 21045); its expiry is in the payload (no NIP-40 tag: the event is
    checked long after, when the invoice has been paid)."""
    return seal(keys, Kind.PAYMENT_INVOICE, invoice)


def seal_payment_request(keys: Keys, request: PaymentRequest) -> Event:
    """The router signs a payment request (kind 21036), addressed to the client, expiring with it."""
    return seal(keys, Kind.PAYMENT_REQUEST, request, to=request.client, nonce=True, expiration=request.expires_at)


def payee_entry(request: PaymentRequest, *, role: str, payee: str) -> Payee:
    for entry in request.payees:
        if entry.role == role and entry.payee == payee:
            return entry
    raise invalid(f"payment request pays no {role} invoice of this payee")


class PaymentRequired(FedaiError):
    """402 `payment_required`. With `request` (the router knows the quote) the error body carries the signed
    payment request to pay, as `error.payment_request`: `{"error": {"code", "message", "payment_request"}}`."""

    def __init__(self, message: str, request: Event | None = None) -> None:
        super().__init__(ErrorCode.PAYMENT_REQUIRED, message)
        self.request = request

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.request is not None:
            body["error"]["payment_request"] = self.request.to_dict()
        return body


class ClaimOutcome(StrEnum):
    """What a single-use claim store answers for a payment hash."""

    CLAIMED = "claimed"  # this claimant holds it now: serve, then consume (or release on failure)
    ALREADY_CONSUMED = "already_consumed"  # a request was served with it
    IN_USE = "in_use"  # another claimant holds it (a request in flight, or a concurrent claim that won)
    EXPIRED = "expired"  # its payment request expired
    UNKNOWN = "unknown"  # no such payment hash in that payment request (or the request is another client's)
    INCOMPLETE = "incomplete"  # the proof leaves out one of the request's payees


def claim_error(outcome: ClaimOutcome | Iterable[ClaimOutcome]) -> FedaiError | None:
    """The typed error a refused claim becomes (None for `CLAIMED`); of several, the most final wins."""
    outcomes = {outcome} if isinstance(outcome, ClaimOutcome) else set(outcome)
    if ClaimOutcome.UNKNOWN in outcomes:
        return invalid("payment request or payment hash unknown here")
    if ClaimOutcome.INCOMPLETE in outcomes:
        return invalid("proof has no preimage for one of the payment request's invoices")
    if ClaimOutcome.ALREADY_CONSUMED in outcomes:
        return FedaiError(ErrorCode.PAYMENT_USED, "this payment was already used for a request that was served")
    if ClaimOutcome.EXPIRED in outcomes:
        return FedaiError(ErrorCode.PAYMENT_EXPIRED, "payment request expired")
    if ClaimOutcome.IN_USE in outcomes:
        return FedaiError(ErrorCode.PAYMENT_IN_USE, "this payment is in use by a request in flight", 1000)
    return None


__all__ = [
    "ClaimOutcome",
    "PaymentRequired",
    "QuoteTerms",
    "check_all_proofs",
    "check_forwarded",
    "check_payment_request",
    "check_proof",
    "claim_error",
    "payee_entry",
    "preimage_matches",
    "seal_invoice",
    "seal_payment_request",
]
