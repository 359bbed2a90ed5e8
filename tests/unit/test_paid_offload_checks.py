"""The pure checks of a paid offload (docs/payments.md#federation-settlement): the client's check of the payment
request against a provider's quote, the SDK's check that the provider's receipt names the payment hash of the
provider invoice the client paid, and the router's binding of a quote to its exact job."""

from __future__ import annotations

import msgspec
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.federation import JobPayment, JobSubmit, Receipt, job_hash, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.messages import InferenceRequest, Offload, QuoteRequest, Usage
from fedai.protocol.payment import QuoteTerms, check_payment_request
from fedai.sdk.chain import check_offload_payment
from fedai.sdk.errors import ChainError, Link
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
