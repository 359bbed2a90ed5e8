"""The client's side of payment (docs/payments.md#the-flow): what it verifies before paying a payment request,
and its chain check of a paid request (the node is forwarded the request paid and its own preimage only)."""

from __future__ import annotations

import time

import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    ForwardedPayment,
    InferenceRequest,
    Payee,
    PayeeRole,
    PaymentProof,
    PriceBreakdown,
    QuoteResponse,
)
from fedai.sdk.chain import verify_chain
from fedai.sdk.errors import ChainError, Link
from fedai.sdk.pay import verify_payment_request
from tests.support.invoices import InvoiceSigner
from tests.support.payments import Paid
from tests.unit.test_sdk_chain import CLIENT, NODE, ROUTER, build

NOW = int(time.time())


@pytest.fixture(autouse=True)
def _now() -> None:
    """Each test's own clock: the chain check reads the real time, so dates fixed at import (the suite may run
    for minutes before these tests) would make the requests look expired."""
    global NOW  # the module's helpers read it
    NOW = int(time.time())


class LivePaid(Paid):
    """A paid quote whose bolt11 strings are real regtest invoices, signed by each payee's Lightning key."""

    def payee(self, role: PayeeRole, keys: Keys, amount: int) -> Payee:
        bolt11, payment_hash, preimage = InvoiceSigner().invoice(amount, date=NOW, expiry=600)
        self.preimages[payment_hash] = preimage
        invoice = self.invoice(role, keys, amount, payment_hash, bolt11)
        return Payee(
            role=role, payee=keys.pubkey, amount_msat=amount, bolt11=bolt11, payment_hash=payment_hash, invoice=invoice
        )


def paid(**fields: object) -> LivePaid:
    return LivePaid(router=ROUTER, node=NODE, client=CLIENT, expires_at=NOW + 300, **fields)  # type: ignore[arg-type]


def quote_of(p: Paid, **price: int) -> QuoteResponse:
    split = {"input_msat": 3_000, "output_msat": p.node_msat - 3_000, "router_fee_msat": p.fee_msat, **price}
    total = split["input_msat"] + split["output_msat"] + split["router_fee_msat"]
    return QuoteResponse(
        quote_id=p.quote_id,
        model="m",
        node=p.node.pubkey,
        input_tokens=4,
        max_output_tokens=16,
        price=PriceBreakdown(**split, total_msat=total),
        expires_at=p.expires_at + 60,
    )


def verify(p: Paid, event: Event | None = None, *, network: str = "regtest", **price: int) -> None:
    verify_payment_request(
        event or p.request, quote_of(p, **price), router=ROUTER.pubkey, client=CLIENT.pubkey, network=network, now=NOW
    )


def test_a_genuine_payment_request_verifies() -> None:
    verify(paid())


@pytest.mark.parametrize(
    "why",
    ["amount off the quote", "another network", "invoice signed by another node", "bolt11 swapped by the router"],
)
def test_nothing_is_paid_for_a_request_that_does_not_verify(why: str) -> None:
    p = paid()
    event: Event | None = None
    kwargs: dict[str, int] = {}
    network = "regtest"
    if why == "amount off the quote":
        kwargs = {"output_msat": 1_000}
    elif why == "another network":
        network = "bitcoin"
    elif why == "invoice signed by another node":
        entry = p.payees()[0]
        forged = p.invoice("node", Keys.generate(), entry.amount_msat, entry.payment_hash, entry.bolt11)
        event = p.sign([msgspec.structs.replace(entry, invoice=forged), *p.payees()[1:]])
    else:  # the router lists its own invoice where the node's was, keeping the node's signed event
        entry = p.payees()[0]
        bolt11, payment_hash, _ = InvoiceSigner().invoice(entry.amount_msat, date=NOW, expiry=600)
        event = p.sign([msgspec.structs.replace(entry, bolt11=bolt11, payment_hash=payment_hash), *p.payees()[1:]])
    with pytest.raises(ChainError) as refused:
        verify(p, event, network=network, **kwargs)
    assert refused.value.link == Link.PAYMENT_REQUEST


def paid_chain(
    p: Paid,
    forwarded_payment: ForwardedPayment | None,
    *,
    proof: PaymentProof | None = None,
    payment_kept: PaymentProof | None = None,
) -> None:
    """A client's paid request and a router's answer forwarding `forwarded_payment`; verified by the client."""
    asked = InferenceRequest(model="m", prompt="what is 2+2?", max_tokens=16, quote_id=p.quote_id, payment=proof)
    request = seal(CLIENT, Kind.INFER_REQUEST, asked, to=ROUTER.pubkey, nonce=True)

    def forward(sent: InferenceRequest) -> InferenceRequest:
        return msgspec.structs.replace(sent, payment=payment_kept, forwarded_payment=forwarded_payment)

    verify_chain(*build(request=request, forward=forward), ROUTER.pubkey)


def node_share(p: Paid, **changes: object) -> ForwardedPayment:
    node_hash = p.hash_of("node")
    fields: dict[str, object] = {"request": p.request, "preimage": p.preimages[node_hash], **changes}
    return ForwardedPayment(**fields)  # type: ignore[arg-type]


def test_a_paid_chain_with_the_nodes_share_forwarded_verifies() -> None:
    p = paid()
    paid_chain(p, node_share(p), proof=p.proof())


@pytest.mark.parametrize("tamper", ["dropped", "fee preimage", "another request", "unpaid request", "proof kept"])
def test_a_forwarded_payment_that_is_not_the_clients_is_caught(tamper: str) -> None:
    p = paid()
    proof: PaymentProof | None = p.proof()
    forwarded: ForwardedPayment | None = None
    if tamper == "fee preimage":
        forwarded = node_share(p, preimage=p.preimages[p.hash_of("router_fee")])
    elif tamper == "another request":
        other = paid(quote_id=p.quote_id)
        forwarded = node_share(other)
    elif tamper == "unpaid request":
        proof, forwarded = None, node_share(p)
    kept = proof if tamper == "proof kept" else None  # the node would learn the fee's preimage too
    if kept is not None:
        forwarded = node_share(p)
    with pytest.raises(ChainError) as refused:
        paid_chain(p, forwarded, proof=proof, payment_kept=kept)
    assert refused.value.link == Link.FORWARDED


def test_a_paid_chain_still_verifies_after_its_payment_request_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    """An archived chain is verified later (GET /v1/chains/{id}): the payment request had to be unexpired when
    the router forwarded it, not when the chain is read."""
    p = paid()
    asked = InferenceRequest(model="m", prompt="what is 2+2?", max_tokens=16, quote_id=p.quote_id, payment=p.proof())
    request = seal(CLIENT, Kind.INFER_REQUEST, asked, to=ROUTER.pubkey, nonce=True)
    share = node_share(p)
    chain = build(
        request=request, forward=lambda sent: msgspec.structs.replace(sent, payment=None, forwarded_payment=share)
    )
    later = time.time() + 3600  # an hour on: the payment request (5 minutes) has long expired
    monkeypatch.setattr("fedai.protocol.envelope.time.time", lambda: later)
    verify_chain(*chain, ROUTER.pubkey)


def test_a_payment_request_expired_when_forwarded_is_refused() -> None:
    p = LivePaid(router=ROUTER, node=NODE, client=CLIENT, expires_at=NOW - 10)
    with pytest.raises(ChainError) as refused:
        paid_chain(p, node_share(p), proof=p.proof())
    assert refused.value.link == Link.FORWARDED and "expired" in str(refused.value)
