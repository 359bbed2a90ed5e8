"""The settlement part of a paid chain (docs/payments.md#refunds): what each payee states it kept and refunded of
its share, checked against the payment request the client paid and the node's metering. Pure, no I/O.

The node's statement is in its signed metering record; the router's (its fee) in its signed infer.response; for
an offloaded request, the provider router's in its signed receipt. Each must name its own invoice of the payment
request, for the amount paid, and add up (`used + refund + kept = quoted`); the node's `used` is its metered
price and the provider's the price its receipt states (each at most its share); nothing is refunded when the
client named no destination. Whether a refund arrived is for the client's wallet to see: the statement is what
was promised.
"""

from __future__ import annotations

import msgspec

from fedai.protocol.federation import Receipt
from fedai.protocol.messages import MeteringRecord, Payee, PaymentProof, PaymentRequest, Settlement, decode_payload
from fedai.protocol.payment import WORK_ROLES
from fedai.sdk.errors import ChainError, InvalidRequest, Link


def check_settlements(
    proof: PaymentProof | None,
    request: PaymentRequest | None,
    record: MeteringRecord,
    router_statement: Settlement | None,
    router: str,
) -> tuple[Settlement, ...]:
    """The node's and the router's statements, checked; () for an unpaid request (which must carry none)."""
    if proof is None or request is None:
        if record.settlement is not None or router_statement is not None:
            raise ChainError(Link.ROUTER_ANSWER, "a settlement for a request that was not paid")
        return ()
    refunding = proof.refund_to is not None
    found: list[Settlement] = []
    if record.settlement is not None:
        entry = next((p for p in request.payees if p.role in WORK_ROLES), None)
        _check(record.settlement, entry, refunding, Link.METERING)
        if record.settlement.used_msat != min(record.price_msat, record.settlement.quoted_msat):
            raise ChainError(Link.METERING, "the settlement's use is not the metered price")
        found.append(record.settlement)
    found.extend(_router_fee(request, router_statement, router, refunding))
    return tuple(found)


def check_offload_settlements(
    proof: PaymentProof | None,
    request: PaymentRequest | None,
    receipt: Receipt,
    router_statement: Settlement | None,
    router: str,
    provider: str,
) -> tuple[Settlement, ...]:
    """A paid offloaded request (docs/payments.md#federation-settlement): the provider router's statement (in its
    signed receipt) and the requester router's (in its answer), checked; () for an unpaid one (which carries
    none). The provider's `used` is the price its receipt states, at most the invoice the client paid it."""
    if proof is None or request is None:
        if receipt.settlement is not None:
            raise ChainError(Link.OFFLOAD_RECEIPT, "a settlement for a job that was not paid")
        if router_statement is not None:
            raise ChainError(Link.ROUTER_ANSWER, "a settlement for a request that was not paid")
        return ()
    refunding = proof.refund_to is not None
    found: list[Settlement] = []
    stated = receipt.settlement
    if stated is not None:
        entry = next((p for p in request.payees if p.role == "provider" and p.payee == provider), None)
        _check(stated, entry, refunding, Link.OFFLOAD_RECEIPT)
        if stated.payment_hash != receipt.payment_hash:
            raise ChainError(Link.OFFLOAD_RECEIPT, "the settlement names another invoice than the receipt")
        if stated.used_msat != min(receipt.price_msat, stated.quoted_msat):
            raise ChainError(Link.OFFLOAD_RECEIPT, "the settlement's use is not the receipt's price")
        found.append(stated)
    found.extend(_router_fee(request, router_statement, router, refunding))
    return tuple(found)


def _router_fee(
    request: PaymentRequest, statement: Settlement | None, router: str, refunding: bool
) -> tuple[Settlement, ...]:
    """The router's statement of its fee, checked against its `router_fee` entry."""
    if statement is None:
        return ()
    entry = next((p for p in request.payees if p.role == "router_fee" and p.payee == router), None)
    _check(statement, entry, refunding, Link.ROUTER_ANSWER)
    return (statement,)


def checked_refund_to(refund_to: str | None) -> str | None:
    """A refund destination checked before anything is paid (`InvalidRequest`, never quoting it)."""
    if refund_to is None:
        return None
    from fedai.payments.refund import parse_destination  # the `pay` extra, which paying needs anyway

    try:
        parse_destination(refund_to)
    except ValueError as exc:
        raise InvalidRequest(f"refund_to: {exc}") from None
    return refund_to


def with_refund_to(proof: PaymentProof, refund_to: str | None) -> PaymentProof:
    return proof if refund_to is None else msgspec.structs.replace(proof, refund_to=refund_to)


def paid_request(forwarded_request_content: str) -> PaymentRequest:
    """The payment request carried by a forwarded paid request (its signature already checked)."""
    return decode_payload(forwarded_request_content, PaymentRequest)


def _check(statement: Settlement, entry: Payee | None, refunding: bool, link: Link) -> None:
    if entry is None or (statement.role, statement.payment_hash) != (entry.role, entry.payment_hash):
        raise ChainError(link, "the settlement names no invoice of the payment request paid")
    if statement.quoted_msat != entry.amount_msat:
        raise ChainError(link, "the settlement's share is not the amount paid")
    if statement.used_msat + statement.refund_msat + statement.kept_msat != statement.quoted_msat:
        raise ChainError(link, "the settlement does not add up to the share paid")
    if statement.refund_msat and not refunding:
        raise ChainError(link, "a refund stated to a destination the client did not name")
