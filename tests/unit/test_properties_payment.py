"""Properties of the payment checks (`fedai.protocol.payment`): a preimage proves exactly its own hash; a proof
passes only with every payee's own preimage; any change to a signed payment request or to a payee's amount is
refused with a payment code, never another exception."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fedai.protocol.errors import ErrorCode
from fedai.protocol.event import Event
from fedai.protocol.messages import PaymentProof
from fedai.protocol.payment import check_all_proofs, check_payment_request, preimage_matches
from tests.support.payments import NOW, Paid
from tests.support.strategies import any_text, attempt

PAID = Paid()  # signing is the slow part: one request, many proofs and mutations
REQUEST = check_payment_request(
    PAID.request, router=PAID.router.pubkey, client=PAID.client.pubkey, quote=PAID.terms, now=NOW
)
PAYMENT_CODES = {ErrorCode.PAYMENT_INVALID, ErrorCode.PAYMENT_EXPIRED}
hex32 = st.binary(min_size=32, max_size=32)


@given(preimage=hex32, other=hex32)
def test_a_preimage_proves_its_own_hash_only(preimage: bytes, other: bytes) -> None:
    payment_hash = hashlib.sha256(preimage).hexdigest()
    assert preimage_matches(preimage.hex(), payment_hash)
    assert preimage_matches(other.hex(), payment_hash) == (other == preimage)


@given(text=any_text, payment_hash=hex32.map(bytes.hex))
def test_any_text_as_a_preimage_is_an_answer_not_an_exception(text: str, payment_hash: str) -> None:
    assert preimage_matches(text, payment_hash) in (True, False)


@st.composite
def proofs(draw: st.DrawFn) -> dict[str, str]:
    """The right preimages, some dropped, replaced by random ones, or joined by foreign hashes."""
    preimages = dict(PAID.preimages)
    for payment_hash in list(preimages):
        action = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if action == "drop":
            del preimages[payment_hash]
        elif action == "replace":
            preimages[payment_hash] = draw(hex32).hex()
    if draw(st.booleans()):
        preimages[draw(hex32).hex()] = draw(hex32).hex()
    return preimages


@given(preimages=proofs())
def test_a_proof_passes_only_with_every_payees_own_preimage(preimages: dict[str, str]) -> None:
    proof = PaymentProof(payment_request=PAID.request.id, preimages=preimages or {"0" * 64: "0" * 64})
    hashes, code = attempt(check_all_proofs, REQUEST, proof)
    if preimages == PAID.preimages:
        assert code is None and sorted(hashes) == sorted(PAID.preimages)
    else:
        assert code is ErrorCode.PAYMENT_INVALID


@settings(max_examples=50)
@given(data=st.data())
def test_any_change_to_a_signed_request_is_refused(data: st.DataObject) -> None:
    event = PAID.request.to_dict()
    field = data.draw(st.sampled_from(["content", "tags", "created_at", "pubkey", "id"]))
    if field == "content":
        position = data.draw(st.integers(0, len(event["content"]) - 1))
        replacement = data.draw(
            st.characters(exclude_categories=["Cs"]).filter(lambda c: c != event["content"][position])
        )
        event["content"] = event["content"][:position] + replacement + event["content"][position + 1 :]
    elif field == "tags":
        event["tags"] = data.draw(st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=3), max_size=3))
        if event["tags"] == PAID.request.tags:
            return
    elif field == "created_at":
        event["created_at"] = data.draw(st.integers(0, 2**40).filter(lambda t: t != PAID.request.created_at))
    else:
        event[field] = data.draw(hex32.map(bytes.hex).filter(lambda v: v != event[field]))
    changed = Event(**event)
    _, code = attempt(
        check_payment_request, changed, router=PAID.router.pubkey, client=PAID.client.pubkey, quote=PAID.terms, now=NOW
    )
    assert code in PAYMENT_CODES


@settings(max_examples=25)
@given(
    node_msat=st.integers(1, 10**12),
    fee_msat=st.integers(0, 10**9),
    delta=st.integers(-(10**6), 10**6).filter(lambda d: d != 0),
    on_fee=st.booleans(),
)
def test_an_amount_off_the_quotes_split_is_refused(node_msat: int, fee_msat: int, delta: int, on_fee: bool) -> None:
    paid = Paid(node_msat=node_msat, fee_msat=fee_msat)
    node_amount, fee_amount = (node_msat, fee_msat + delta) if on_fee and fee_msat else (node_msat + delta, fee_msat)
    if node_amount < 1 or (fee_msat and fee_amount < 1):
        return
    payees = [paid.payee("node", paid.node, node_amount)]
    if fee_msat:
        payees.append(paid.payee("router_fee", paid.router, fee_amount))
    args = {"router": paid.router.pubkey, "client": paid.client.pubkey, "quote": paid.terms, "now": NOW}
    _, off_split = attempt(check_payment_request, paid.sign(payees), **args)
    _, as_quoted = attempt(check_payment_request, paid.request, **args)
    assert (off_split, as_quoted) == (ErrorCode.PAYMENT_INVALID, None)
