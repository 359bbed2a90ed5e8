"""The pure checks of a paid offload (docs/payments.md#federation-settlement): the client's check of the payment
request against a provider's quote, the SDK's check that the provider's receipt names the payment hash of the
provider invoice the client paid, with the refund destination the client named, and the provider's statement of it;
the requester's check of that statement; and the router's binding of a quote to its exact job."""

from __future__ import annotations

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.federation import JobPayment, JobSubmit, Receipt, job_hash, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.messages import (
    InferenceRequest,
    Offload,
    PaymentRequest,
    QuoteRequest,
    Settlement,
    Usage,
    decode_payload,
)
from fedai.protocol.payment import QuoteTerms, check_payment_request
from fedai.sdk.chain import check_offload_payment
from fedai.sdk.errors import ChainError, Link
from fedai.sdk.settlement import check_offload_settlements
from fedai_router.federation.result_check import settlement_problems
from fedai_router.paid_offload import is_quoted_job, offload_price, quoted_job
from fedai_router.pricing import Fees
from fedai_router.store.offload_quotes import WonJob
from tests.support.payments import NOW, Paid

BID, FEE = 7_000, 1_000
HEX = "ab" * 32


def provider_paid(provider: Keys, amount: int = BID) -> Paid:
    """A payment request listing `provider`'s own invoice (role provider) and the router's fee."""
    paid = Paid(fee_msat=FEE)
    paid.preimages.clear()
    paid.event = paid.sign([paid.payee("provider", provider, amount), paid.payee("router_fee", paid.router, FEE)])
    return paid


def provider_terms(paid: Paid, provider: Keys) -> QuoteTerms:
    return QuoteTerms(paid.quote_id, None, BID, FEE, BID + FEE, paid.expires_at, provider=provider.pubkey)


def test_the_client_accepts_the_provider_split_of_a_provider_quote() -> None:
    provider = Keys.generate()
    paid = provider_paid(provider)
    opened = check_payment_request(
        paid.request,
        router=paid.router.pubkey,
        client=paid.client.pubkey,
        quote=provider_terms(paid, provider),
        now=NOW,
    )
    assert {p.role for p in opened.payload.payees} == {"provider", "router_fee"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another amount", "total or expiry differs"),  # the provider invoiced more than its bid
        ("another provider", "another payee"),  # a provider's invoice, but not the quoted provider's
        ("a node", "another payee"),  # a node listed where the quote names a provider
    ],
)
def test_the_client_refuses_a_payment_request_that_is_not_the_provider_quote(case: str, message: str) -> None:
    provider = Keys.generate()
    if case == "another amount":
        paid = provider_paid(provider, BID + 1)
    elif case == "another provider":
        paid = provider_paid(Keys.generate())
    else:
        paid = Paid(node_msat=BID, fee_msat=FEE)
    with pytest.raises(FedaiError) as caught:
        check_payment_request(
            paid.request,
            router=paid.router.pubkey,
            client=paid.client.pubkey,
            quote=provider_terms(paid, provider),
            now=NOW,
        )
    assert caught.value.code is ErrorCode.PAYMENT_INVALID and message in caught.value.message


def _offload(
    paid: Paid, provider: Keys, *, sent: JobPayment | None, receipt_hash: str | None
) -> tuple[JobSubmit, Receipt, Offload]:
    submit = JobSubmit(job_id="cd" * 16, award=HEX, privacy=1, sealed="x", input_sha256=HEX, max_cost_msat=BID)
    submit = msgspec.structs.replace(submit, payment=sent)
    receipt = Receipt(
        job_id="cd" * 16,
        job_submit=HEX,
        requester=paid.router.pubkey,
        provider=provider.pubkey,
        input_sha256=HEX,
        output_sha256=HEX,
        usage=Usage(input_tokens=3, output_tokens=2),
        price_msat=BID,
        status="ok",
        started_ms=NOW * 1000,
        finished_ms=NOW * 1000,
        payment_hash=receipt_hash,
    )
    # the submit, result and receipt events are checked elsewhere (`_verify_offloaded`): any event stands in
    off = Offload(
        submit=paid.request,
        result=paid.request,
        receipt=paid.request,
        provider=provider.pubkey,
        payment_request=paid.request,
    )
    return submit, receipt, off


def test_the_receipt_must_name_the_payment_hash_of_the_provider_invoice_the_client_paid() -> None:
    provider = Keys.generate()
    paid = provider_paid(provider)
    proof = paid.proof()
    provider_hash, fee_hash = paid.hash_of("provider"), paid.hash_of("router_fee")
    sent = JobPayment(payment_hash=provider_hash, preimage=paid.preimages[provider_hash])
    router = paid.router.pubkey

    submit, receipt, off = _offload(paid, provider, sent=sent, receipt_hash=provider_hash)
    assert check_offload_payment(submit, receipt, proof, off, router, NOW) == provider_hash

    bad = {
        "no payment hash": _offload(paid, provider, sent=sent, receipt_hash=None),
        "the fee's hash": _offload(paid, provider, sent=sent, receipt_hash=fee_hash),
        "the fee sent": _offload(
            paid,
            provider,
            sent=JobPayment(payment_hash=fee_hash, preimage=paid.preimages[fee_hash]),
            receipt_hash=fee_hash,
        ),
        "nothing sent": _offload(paid, provider, sent=None, receipt_hash=provider_hash),
    }
    for case, (s, r, o) in bad.items():
        with pytest.raises(ChainError) as caught:
            check_offload_payment(s, r, proof, o, router, NOW)
        assert caught.value.link in (Link.OFFLOAD_RECEIPT, Link.OFFLOAD_SUBMIT), case

    # another router's payment request, or none at all, is not the one the client paid
    forged = provider_paid(provider)
    s, r, o = _offload(paid, provider, sent=sent, receipt_hash=provider_hash)
    for carried in (None, forged.request):
        with pytest.raises(ChainError, match="payment request"):
            check_offload_payment(s, r, proof, msgspec.structs.replace(o, payment_request=carried), router, NOW)
    # an unpaid request whose job carried a payment
    with pytest.raises(ChainError, match="did not make"):
        check_offload_payment(s, r, None, o, router, NOW)


def test_an_offloaded_quote_binds_the_exact_job_and_prices_the_fee_on_top_of_the_bid() -> None:
    asked = QuoteRequest(model="m", prompt="hi", max_tokens=8, temperature=0.5, privacy=1)
    job = quoted_job(asked)
    assert job is not None
    assert quoted_job(QuoteRequest(model="m", input_tokens=10, max_tokens=8)) is None  # no job to auction
    salt = new_salt()
    won = WonJob("ef" * 16, HEX, BID, salt, job_hash(job, salt), NOW, *([Paid().request] * 3))
    same = InferenceRequest(model="m", prompt="hi", max_tokens=8, temperature=0.5, privacy=1, quote_id="q")
    assert is_quoted_job(same, won)  # the quote id and the proof are not part of the job
    for other in ({"temperature": 0.6}, {"max_tokens": 7}, {"prompt": "hi!"}, {"privacy": 2}):
        assert not is_quoted_job(msgspec.structs.replace(same, **other), won), other
    price = offload_price(BID, Fees(base_msat=100, ppm=10_000))
    assert (price.input_msat, price.output_msat, price.router_fee_msat, price.total_msat) == (0, BID, 170, BID + 170)


def test_the_provider_must_be_sent_the_refund_destination_the_client_named() -> None:
    provider = Keys.generate()
    paid = provider_paid(provider)
    provider_hash = paid.hash_of("provider")
    router, mine = paid.router.pubkey, "client@example.com"
    proof = msgspec.structs.replace(paid.proof(), refund_to=mine)

    def sent(refund_to: str | None) -> JobPayment:
        return JobPayment(payment_hash=provider_hash, preimage=paid.preimages[provider_hash], refund_to=refund_to)

    s, r, o = _offload(paid, provider, sent=sent(mine), receipt_hash=provider_hash)
    assert check_offload_payment(s, r, proof, o, router, NOW) == provider_hash
    # the requester redirected the refund, dropped it, or added one the client never named
    for carried, client in ((sent("thief@example.com"), proof), (sent(None), proof), (sent(mine), paid.proof())):
        s, r, o = _offload(paid, provider, sent=carried, receipt_hash=provider_hash)
        with pytest.raises(ChainError, match="refund destination") as caught:
            check_offload_payment(s, r, client, o, router, NOW)
        assert caught.value.link is Link.OFFLOAD_SUBMIT


def _statement(paid: Paid, role: str = "provider", **changes: int | str) -> Settlement:
    """The provider's statement of its invoice for a job priced PRICE, everything unused refunded."""
    stated = Settlement(
        role="provider" if role == "provider" else "router_fee",
        payment_hash=paid.hash_of(role),
        quoted_msat=BID,
        used_msat=PRICE,
        refund_msat=BID - PRICE,
        kept_msat=0,
    )
    return msgspec.structs.replace(stated, **changes)


PRICE = 2_500  # what the provider's receipt states the job cost


def test_the_sdk_checks_the_providers_statement_in_its_receipt() -> None:
    provider = Keys.generate()
    paid = provider_paid(provider)
    provider_hash = paid.hash_of("provider")
    request = decode_payload(paid.request.content, PaymentRequest)
    router = paid.router.pubkey
    refunding = msgspec.structs.replace(paid.proof(), refund_to="client@example.com")
    _, receipt, _ = _offload(paid, provider, sent=None, receipt_hash=provider_hash)
    receipt = msgspec.structs.replace(receipt, price_msat=PRICE, settlement=_statement(paid))
    fee = Settlement(
        role="router_fee", payment_hash=paid.hash_of("router_fee"), quoted_msat=FEE, used_msat=FEE // 2,
        refund_msat=FEE // 2, kept_msat=0,
    )  # fmt: skip
    assert check_offload_settlements(refunding, request, receipt, fee, router, provider.pubkey) == (
        receipt.settlement,
        fee,
    )
    kept = _statement(paid, refund_msat=0, kept_msat=BID - PRICE)
    without = msgspec.structs.replace(receipt, settlement=kept)
    assert check_offload_settlements(paid.proof(), request, without, None, router, provider.pubkey) == (kept,)

    bad = {
        "names no invoice": (_statement(paid, role="router_fee"), refunding),
        "share is not the amount": (_statement(paid, quoted_msat=BID + 1, refund_msat=BID + 1 - PRICE), refunding),
        "does not add up": (_statement(paid, kept_msat=1), refunding),
        "not the receipt's price": (_statement(paid, used_msat=PRICE - 1, refund_msat=BID - PRICE + 1), refunding),
        "did not name": (_statement(paid), paid.proof()),  # a refund, but the client named no destination
    }
    for message, (statement, proof) in bad.items():
        changed = msgspec.structs.replace(receipt, settlement=statement)
        with pytest.raises(ChainError, match=message) as caught:
            check_offload_settlements(proof, request, changed, None, router, provider.pubkey)
        assert caught.value.link is Link.OFFLOAD_RECEIPT, message
    # another provider's statement, a statement of an unpaid job, a fee stated on an unpaid request
    with pytest.raises(ChainError, match="names no invoice"):
        check_offload_settlements(refunding, request, receipt, None, router, Keys.generate().pubkey)
    with pytest.raises(ChainError, match="not paid") as unpaid:
        check_offload_settlements(None, None, receipt, None, router, provider.pubkey)
    assert unpaid.value.link is Link.OFFLOAD_RECEIPT
    with pytest.raises(ChainError, match="not paid") as unpaid:
        check_offload_settlements(None, None, msgspec.structs.replace(receipt, settlement=None), fee, router, "")
    assert unpaid.value.link is Link.ROUTER_ANSWER


def test_the_requester_refuses_a_receipt_whose_statement_breaks_the_clients_rules() -> None:
    provider = Keys.generate()
    paid = provider_paid(provider)
    provider_hash = paid.hash_of("provider")
    to = "client@example.com"
    sent = JobPayment(payment_hash=provider_hash, preimage=paid.preimages[provider_hash], refund_to=to)
    submit, receipt, _ = _offload(paid, provider, sent=sent, receipt_hash=provider_hash)
    receipt = msgspec.structs.replace(receipt, price_msat=PRICE, settlement=_statement(paid))
    assert settlement_problems(receipt, submit, BID) == []
    assert settlement_problems(msgspec.structs.replace(receipt, settlement=None), submit, BID) == []
    cases = {
        "settlement's invoice": (_statement(paid, role="router_fee"), submit),
        "settlement's sum": (_statement(paid, kept_msat=1), submit),
        "settlement's use": (_statement(paid, used_msat=PRICE + 1, refund_msat=BID - PRICE - 1), submit),
        "settlement's refund": (_statement(paid), msgspec.structs.replace(submit, payment=JobPayment(
            payment_hash=provider_hash, preimage=paid.preimages[provider_hash]))),
        "unpaid job": (_statement(paid), msgspec.structs.replace(submit, payment=None)),
    }  # fmt: skip
    for problem, (statement, job) in cases.items():
        found = settlement_problems(msgspec.structs.replace(receipt, settlement=statement), job, BID)
        assert any(problem in p for p in found), (problem, found)
