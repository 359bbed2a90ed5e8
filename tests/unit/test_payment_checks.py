"""fedai.protocol.payment: a payment request and its proof pass for the client, router and node they bind, and
every bad input of the payments issue that needs no I/O is refused with its typed code."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import ForwardedPayment, Payee, PaymentProof, PriceBreakdown, QuoteResponse
from fedai.protocol.payment import (
    ClaimOutcome,
    QuoteTerms,
    check_all_proofs,
    check_forwarded,
    check_payment_request,
    check_proof,
    claim_error,
)
from tests.support.payments import NOW, Paid, new_preimage


def check(paid: Paid, event: Event | None = None, **kwargs: object) -> object:
    args: dict[str, object] = {
        "router": paid.router.pubkey,
        "client": paid.client.pubkey,
        "quote": paid.terms,
        "now": NOW,
    }
    args.update(kwargs)
    return check_payment_request(event or paid.request, **args)  # type: ignore[arg-type]


def refused(code: ErrorCode, fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(FedaiError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert info.value.code is code, info.value
    return info.value.message


def test_a_good_request_and_proof_pass_for_the_router() -> None:
    paid = Paid()
    request = check_payment_request(
        paid.request, router=paid.router.pubkey, client=paid.client.pubkey, quote=paid.terms, now=NOW
    )
    assert request.payload.total_msat == 8_000
    hashes = check_all_proofs(request, paid.proof())
    assert sorted(hashes) == sorted(paid.preimages)
    fee = check_proof(request, paid.proof(), role="router_fee", payee=paid.router.pubkey)
    assert fee.amount_msat == 1_000 and fee.payment_hash == paid.hash_of("router_fee")


def test_the_client_checks_against_its_signed_quote() -> None:
    paid = Paid()
    quote = QuoteResponse(
        quote_id=paid.quote_id,
        model="m",
        node=paid.node.pubkey,
        input_tokens=10,
        max_output_tokens=20,
        price=PriceBreakdown(input_msat=2_000, output_msat=5_000, router_fee_msat=1_000, total_msat=8_000),
        expires_at=paid.expires_at,
    )
    assert QuoteTerms.from_response(quote) == paid.terms
    check(paid, quote=QuoteTerms.from_response(quote))


def test_no_router_fee_means_one_payee() -> None:
    paid = Paid(fee_msat=0)
    request = check(paid)
    assert [p.role for p in request.payload.payees] == ["node"]  # type: ignore[attr-defined]


def test_the_node_checks_the_forwarded_proof_of_its_own_invoice() -> None:
    paid = Paid()
    node_hash = paid.hash_of("node")
    forwarded = ForwardedPayment(request=paid.request, preimage=paid.preimages[node_hash])
    args = {"router": paid.router.pubkey, "client": paid.client.pubkey, "quote_id": paid.quote_id, "now": NOW}
    entry = check_forwarded(forwarded, payee=paid.node.pubkey, **args)  # type: ignore[arg-type]
    assert entry.payment_hash == node_hash and entry.amount_msat == 7_000
    # another node, the router's fee preimage, another quote id
    refused(ErrorCode.PAYMENT_INVALID, check_forwarded, forwarded, payee=Keys.generate().pubkey, **args)
    fee_preimage = ForwardedPayment(request=paid.request, preimage=paid.preimages[paid.hash_of("router_fee")])
    refused(ErrorCode.PAYMENT_INVALID, check_forwarded, fee_preimage, payee=paid.node.pubkey, **args)
    refused(
        ErrorCode.PAYMENT_INVALID, check_forwarded, forwarded, payee=paid.node.pubkey, **{**args, "quote_id": "other"}
    )


# --- proofs ---


def test_a_preimage_that_does_not_match_is_refused() -> None:
    paid = Paid()
    request = check(paid)
    wrong = dict(paid.preimages)
    wrong[paid.hash_of("router_fee")] = new_preimage()[0]
    message = refused(ErrorCode.PAYMENT_INVALID, check_all_proofs, request, paid.proof(wrong))
    assert "does not match" in message
    refused(
        ErrorCode.PAYMENT_INVALID, check_proof, request, paid.proof(wrong), role="router_fee", payee=paid.router.pubkey
    )


def test_a_missing_preimage_is_refused() -> None:
    paid = Paid()
    request = check(paid)
    only_node = {paid.hash_of("node"): paid.preimages[paid.hash_of("node")]}
    refused(ErrorCode.PAYMENT_INVALID, check_all_proofs, request, paid.proof(only_node))
    assert check_proof(request, paid.proof(only_node), role="node", payee=paid.node.pubkey).role == "node"


def test_a_valid_preimage_of_another_requests_invoice_is_refused() -> None:
    one, other = Paid(), Paid()
    request = check(one)
    # the other request's proof as it is, and relabelled with this request's id
    refused(ErrorCode.PAYMENT_INVALID, check_all_proofs, request, other.proof())
    relabelled = PaymentProof(payment_request=one.request.id, preimages=dict(other.preimages))
    message = refused(ErrorCode.PAYMENT_INVALID, check_all_proofs, request, relabelled)
    assert "does not list" in message
    # one good preimage plus a valid one of another invoice
    mixed = {**one.preimages, **dict(list(other.preimages.items())[:1])}
    refused(ErrorCode.PAYMENT_INVALID, check_all_proofs, request, one.proof(mixed))


def test_a_proof_sent_by_another_client_key_is_refused() -> None:
    paid = Paid()
    message = refused(ErrorCode.PAYMENT_INVALID, check, paid, client=Keys.generate().pubkey)
    assert "client" in message


def test_a_payee_not_in_the_request_is_refused() -> None:
    paid = Paid()
    request = check(paid)
    refused(ErrorCode.PAYMENT_INVALID, check_proof, request, paid.proof(), role="node", payee=paid.router.pubkey)


# --- the request's binding ---


def test_an_expired_request_is_refused() -> None:
    paid = Paid()
    refused(ErrorCode.PAYMENT_EXPIRED, check, paid, now=paid.expires_at)
    refused(ErrorCode.PAYMENT_EXPIRED, check, paid, now=paid.expires_at + 1)
    check(paid, now=paid.expires_at - 1)
    # the payload's expiry counts even without the NIP-40 tag
    untagged = Event(**{**paid.request.to_dict(), "tags": [t for t in paid.request.tags if t[0] != "expiration"]})
    resigned = sign_event(paid.router, untagged.kind, untagged.content, untagged.tags)
    refused(ErrorCode.PAYMENT_EXPIRED, check, paid, resigned, now=paid.expires_at)


@pytest.mark.parametrize(
    "change",
    [
        {"router": Keys.generate().pubkey},
        {"quote": QuoteTerms("other-quote", "0" * 64, 7_000, 1_000, 8_000, NOW + 600)},
        {"quote": "other-quote"},
    ],
    ids=["another router", "another quote", "another quote id"],
)
def test_a_request_for_another_router_or_quote_is_refused(change: dict[str, object]) -> None:
    refused(ErrorCode.PAYMENT_INVALID, check, Paid(), **change)


def test_a_request_signed_by_another_router_or_addressed_to_another_client_is_refused() -> None:
    paid = Paid()
    by_other = paid.sign(paid.payees(), signer=Keys.generate())
    assert "signed" in refused(ErrorCode.PAYMENT_INVALID, check, paid, by_other)
    content = paid.request.content
    misaddressed = sign_event(paid.router, Kind.PAYMENT_REQUEST, content, [["p", Keys.generate().pubkey]])
    assert "addressed" in refused(ErrorCode.PAYMENT_INVALID, check, paid, misaddressed)
    wrong_kind = sign_event(paid.router, Kind.QUOTE_RESPONSE, content, [["p", paid.client.pubkey]])
    refused(ErrorCode.PAYMENT_INVALID, check, paid, wrong_kind)


def test_a_tampered_request_is_refused() -> None:
    paid = Paid()
    raised = paid.request.content.replace('"total_msat":8000', '"total_msat":9000')
    assert raised != paid.request.content
    forged = Event(**{**paid.request.to_dict(), "content": raised})
    refused(ErrorCode.PAYMENT_INVALID, check, paid, forged)
    bad_sig = Event(**{**paid.request.to_dict(), "sig": "0" * 128})
    refused(ErrorCode.PAYMENT_INVALID, check, paid, bad_sig)
    not_a_request = sign_event(paid.router, Kind.PAYMENT_REQUEST, "{}", [["p", paid.client.pubkey]])
    refused(ErrorCode.PAYMENT_INVALID, check, paid, not_a_request)


# --- amounts and payees ---


def test_an_amount_that_differs_from_the_share_is_refused() -> None:
    paid = Paid()
    # the node's invoice (signed by the node) and its entry agree, but on one msat more than the quote's share
    greedy = [paid.payee("node", paid.node, 7_001), paid.payee("router_fee", paid.router, 1_000)]
    message = refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign(greedy, total_msat=8_001))
    assert "total" in message
    shifted = [paid.payee("node", paid.node, 6_000), paid.payee("router_fee", paid.router, 2_000)]
    assert "share" in refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign(shifted))
    # without the quote (a node), the split is not checked but the sum is
    check(paid, paid.sign(shifted), quote=paid.quote_id)


def test_an_entry_that_differs_from_the_payees_invoice_is_refused() -> None:
    paid = Paid()
    node, fee = paid.payees()
    for change in ({"amount_msat": 7_500}, {"bolt11": "lnbcrt1forged"}, {"payment_hash": new_preimage()[1]}):
        entry = msgspec.structs.replace(node, **change)  # type: ignore[arg-type]
        total = entry.amount_msat + fee.amount_msat
        message = refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([entry, fee], total_msat=total))
        assert "differs" in message, change


def test_a_payee_invoice_forged_or_signed_by_another_node_is_refused() -> None:
    paid = Paid()
    node, fee = paid.payees()
    impostor = Keys.generate()
    # the invoice signed by another node, entry naming the real node
    signed_by_other = msgspec.structs.replace(
        node, invoice=paid.invoice("node", impostor, node.amount_msat, node.payment_hash, node.bolt11)
    )
    assert "not signed" in refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([signed_by_other, fee]))
    # the impostor as payee with its own invoice: not the quote's node
    own = paid.payee("node", impostor, node.amount_msat)
    assert "another payee" in refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([own, fee]))
    # the node's invoice with its content changed after signing (the router swapped in its own payment hash)
    swapped = node.invoice.content.replace(node.payment_hash, fee.payment_hash)
    forged = msgspec.structs.replace(
        node, payment_hash=fee.payment_hash, invoice=Event(**{**node.invoice.to_dict(), "content": swapped})
    )
    refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([forged, fee]))


def test_an_invoice_for_another_quote_client_or_router_is_refused() -> None:
    paid = Paid()
    other = Paid(node=paid.node, router=paid.router)  # same node and router, another quote and client
    node_of_other = other.payees()[0]
    _, fee = paid.payees()
    message = refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([node_of_other, fee]))
    assert "another quote" in message


def test_the_router_fee_goes_to_the_router_and_the_work_to_one_payee() -> None:
    paid = Paid()
    node, fee = paid.payees()
    elsewhere = paid.payee("router_fee", Keys.generate(), 1_000)
    assert "router fee" in refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([node, elsewhere]))
    second = paid.payee("provider", Keys.generate(), 1_000)
    refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([node, second]))
    refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([fee]))
    assert "sum" in refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign([node, fee], total_msat=1))
    duplicated: list[Payee] = [node, msgspec.structs.replace(fee, payment_hash=node.payment_hash)]
    refused(ErrorCode.PAYMENT_INVALID, check, paid, paid.sign(duplicated))


def test_an_offloaded_job_pays_the_provider_named() -> None:
    paid = Paid()
    provider = Keys.generate()
    work = paid.payee("provider", provider, 7_000)
    _, fee = paid.payees()
    event = paid.sign([work, fee])
    check(paid, event, provider=provider.pubkey)
    refused(ErrorCode.PAYMENT_INVALID, check, paid, event)  # the quote names a node
    refused(ErrorCode.PAYMENT_INVALID, check, paid, event, provider=Keys.generate().pubkey)


def test_an_invoice_that_outlives_the_request_or_a_request_that_outlives_its_quote_is_refused() -> None:
    paid = Paid()
    node, fee = paid.payees()
    shorter = paid.sign([node, fee], expires_at=paid.expires_at - 60)
    assert "outlives" in refused(ErrorCode.PAYMENT_INVALID, check, paid, shorter)
    longer = Paid(expires_at=NOW + 10_000)
    refused(ErrorCode.PAYMENT_INVALID, check, longer, quote=dataclasses.replace(longer.terms, expires_at=NOW + 600))


def test_claim_outcomes_become_typed_errors() -> None:
    assert claim_error(ClaimOutcome.CLAIMED) is None
    expected = {
        ClaimOutcome.ALREADY_CONSUMED: (ErrorCode.PAYMENT_USED, 409),
        ClaimOutcome.IN_USE: (ErrorCode.PAYMENT_IN_USE, 409),
        ClaimOutcome.EXPIRED: (ErrorCode.PAYMENT_EXPIRED, 402),
        ClaimOutcome.UNKNOWN: (ErrorCode.PAYMENT_INVALID, 402),
        ClaimOutcome.INCOMPLETE: (ErrorCode.PAYMENT_INVALID, 402),
    }
    for outcome, (code, status) in expected.items():
        err = claim_error(outcome)
        assert err is not None and (err.code, err.status) == (code, status)
    # of several, the most final: consumed beats in use
    mixed = claim_error([ClaimOutcome.CLAIMED, ClaimOutcome.IN_USE, ClaimOutcome.ALREADY_CONSUMED])
    assert mixed is not None and mixed.code is ErrorCode.PAYMENT_USED
