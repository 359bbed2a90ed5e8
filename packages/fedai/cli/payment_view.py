"""The payment part of a verified chain, for `fedai infer` (docs/payments.md#paying-from-the-command-line).

A paid request carries the client's proof (`payment`: the payment request's id and a preimage per invoice) and
reaches its node with the router-signed payment request (`forwarded_payment`); `verify_chain` already checked
that the node was forwarded the request the client paid and its own preimage. Here: which invoices were paid,
to whom, for how much, each ✓ a preimage that hashes to its invoice's payment hash. 80 columns; ids whole in
`--json`. And, for `fedai payment`, each payee's refund as the router records it.
"""

from __future__ import annotations

from typing import Any

from fedai.cli.output import mark, short_id, short_npub
from fedai.protocol.messages import InferenceRequest, InferResult, PaymentRequest, decode_payload
from fedai.protocol.payment import preimage_matches
from fedai.sdk import VerifiedChain

ROLES = {"node": "node share", "router_fee": "router fee", "provider": "provider"}


def paid_request(chain: VerifiedChain) -> tuple[str, PaymentRequest, dict[str, str]] | None:
    """(payment request id, its content, the client's preimages) of a paid chain; None for an unpaid one."""
    sent = decode_payload(chain.request.content, InferenceRequest)
    if sent.payment is None:
        return None
    if chain.provider is not None:  # offloaded: the answer carries it, checked against the provider's receipt
        offload = decode_payload(chain.answer.content, InferResult).offload
        carried = None if offload is None else offload.payment_request
    else:  # the node was forwarded it
        forwarded = decode_payload(chain.forwarded.content, InferenceRequest).forwarded_payment
        carried = None if forwarded is None else forwarded.request
    if carried is None:
        return None
    return sent.payment.payment_request, decode_payload(carried.content, PaymentRequest), sent.payment.preimages


def payment_lines(chain: VerifiedChain) -> list[str]:
    """What was paid for this answer, one invoice a line; nothing for an unpaid request."""
    paid = paid_request(chain)
    if paid is None:
        return []
    request_id, request, preimages = paid
    lines = [f"[bold]payment[/bold] {short_id(request_id)}: {request.total_msat} msat paid, invoice by invoice"]
    for p in request.payees:
        proven = preimage_matches(preimages.get(p.payment_hash, ""), p.payment_hash)
        role = ROLES.get(p.role, p.role)
        lines.append(
            f"  {mark(proven)} {role:<11} {short_npub(p.payee)} {p.amount_msat:>9} msat  {short_id(p.payment_hash)}"
        )
    return lines


def payment_document(chain: VerifiedChain) -> dict[str, Any] | None:
    """The payment in `fedai infer --json`: the request id, the total and each invoice paid, ids whole."""
    paid = paid_request(chain)
    if paid is None:
        return None
    request_id, request, preimages = paid
    return {
        "payment_request": request_id,
        "total_msat": request.total_msat,
        "payees": [
            {
                "role": p.role,
                "payee": p.payee,
                "amount_msat": p.amount_msat,
                "payment_hash": p.payment_hash,
                "paid": preimage_matches(preimages.get(p.payment_hash, ""), p.payment_hash),
            }
            for p in request.payees
        ],
    }


def refund_line(payee: dict[str, Any]) -> str | None:
    """A payee's refund as `fedai payment` shows it (GET /payments/{id}'s `refund`), or None before the answer.
    `stated`: the payee promised it in its signed statement (a node pays from its own wallet and records it in its
    own database); whether it arrived is for the client's wallet to see."""
    refund = payee.get("refund")
    if not isinstance(refund, dict):
        return None
    used, kept = refund.get("used_msat"), refund.get("kept_msat")
    stated = "" if used is None else f", used {used}, kept {kept}"
    return f"      refund {refund.get('state')}: {refund.get('refund_msat')} msat{stated}"
