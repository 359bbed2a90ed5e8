# Long but one concept: a paid offloaded job between two routers on a real relay, each with its own wallet.
"""Federation settlement (docs/federation.md#settlement): the provider router is the payee of an offloaded job.

Requester A (no node, a paying router) and provider B (one node, ROUTER_REQUIRE_PAYMENT) each have their own
wallet; the client has its own. TEST-ONLY WALLETS: the real LND backend against tests/support/fake_lnd.py (one
in-memory ledger signing real regtest BOLT11 invoices), as in tests/support/paid_network.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import JobPayment, JobSubmit, Receipt, Rfb, job_hash, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferResult,
    InvoiceRequest,
    Payee,
    PayeeInvoice,
    Settlement,
    decode_payload,
    estimate_tokens,
    prompt_material,
)
from fedai_router.completion import Origin
from fedai_router.federation.auction import Awarded
from fedai_router.federation.offload import Offloading
from fedai_router.federation.provider_invoice import InvoiceFor
from fedai_router.offloading import PaidJob
from tests.support.database import extra_database
from tests.support.fake_lnd import Lnd, running_lnd
from tests.support.federation import MODEL, Duo, duo, job_submit, post_job
from tests.support.lightning import Ledger
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration

NETWORK = "regtest"
REQUEST = InferenceRequest(model=MODEL, prompt="hello federation", max_tokens=8)


@pytest.fixture(scope="module")
async def b_database(database_url: str) -> AsyncIterator[str]:
    async with extra_database(database_url, "settle_b") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("settle-tls"))


@dataclass
class Paid:
    pair: Duo
    ledger: Ledger
    client: Lnd
    client_keys: Keys

    @property
    def offloading(self) -> Offloading:
        offloading = self.pair.a.service.federation._offloading
        assert offloading is not None
        return offloading

    async def award(self) -> tuple[Awarded, str]:
        """A's auction for REQUEST, won by B (accepted on B's side); with its salt."""
        salt = new_salt()
        rfb = Rfb(
            job_type="text-generation",
            model=MODEL,
            privacy=1,  # what `offload` sends at by default (ROUTER_FED_MIN_PRIVACY)
            input_tokens=estimate_tokens(len(prompt_material(REQUEST))),
            max_tokens=REQUEST.max_tokens,
            max_price_msat=100_000,
            job_hash=job_hash(REQUEST, salt),
            deadline_ms=int(time.time() * 1000) + 60_000,
        )
        awarded = await self.pair.auctioneer.auction(rfb, ttl_s=3.0, expect={self.pair.b.pubkey})
        assert awarded is not None and awarded.peer == self.pair.b.pubkey
        assert await self.pair.bidder.wait_accepted(awarded.job_id, 5)
        return awarded, salt

    async def invoice(self, awarded: Awarded) -> Payee:
        wanted = InvoiceFor(quote="client-quote", client=self.client_keys.pubkey, expires_at=int(time.time()) + 120)
        return await self.offloading.provider_invoice(awarded, wanted)

    async def pay(self, payee: Payee) -> str:
        """The client pays the provider's invoice from its own wallet: the preimage."""
        payment = await self.client.wallet.pay_invoice(payee.bolt11, 5_000, "key-" + payee.payment_hash)
        return payment.preimage


@pytest.fixture
async def paid(
    database_url: str, db_pool: asyncpg.Pool, b_database: str, tls: SelfSigned, tmp_path: Path
) -> AsyncIterator[Paid]:
    ledger = Ledger()
    for name in ("client", "requester", "provider"):
        ledger.add_node(name, balance_msat=1_000_000 if name == "client" else 0)
    async with (
        running_lnd(ledger, "client", tls, tmp_path) as client,
        running_lnd(ledger, "requester", tls, tmp_path) as a_wallet,
        running_lnd(ledger, "provider", tls, tmp_path) as b_wallet,
    ):
        a_options = {"require_payment": True, "wallet": a_wallet.spec, "ln_network": NETWORK, "auction_ttl_ms": 2500}
        b_options = {"require_payment": True, "wallet": b_wallet.spec, "ln_network": NETWORK}
        async with duo(database_url, db_pool, b_database, a_options=a_options, b_options=b_options) as pair:
            yield Paid(pair, ledger, client, Keys.generate())


def with_payment(submit: Event, requester: Keys, payment: JobPayment | None) -> Event:
    """The same job.submit, with `payment` (a fresh id: not a replay of the event itself)."""
    payload = msgspec.structs.replace(decode_payload(submit.content, JobSubmit), payment=payment)
    return seal(requester, Kind.JOB_SUBMIT, payload, to=submit.tag_values("p")[0], nonce=True)


async def test_b_announces_lightning_and_a_learns_it(paid: Paid) -> None:
    view = paid.pair.a.service.federation.peers.view(paid.pair.b.pubkey)
    assert view is not None and view.caps.settlement == ["lightning"]  # B requires payment: no "none"


async def test_the_provider_runs_only_a_job_paid_with_its_own_invoice_for_that_award(paid: Paid) -> None:
    a, b, node = paid.pair.a, paid.pair.b, paid.pair.node
    awarded, salt = await paid.award()
    other, _ = await paid.award()
    payee, other_payee = await paid.invoice(awarded), await paid.invoice(other)
    invoice = decode_payload(payee.invoice.content, PayeeInvoice)
    assert (invoice.role, invoice.award, invoice.router) == ("provider", awarded.award.id, a.pubkey)
    assert payee.amount_msat == awarded.bid_payload.price_msat and payee.payee == b.pubkey
    assert (await paid.invoice(awarded)).payment_hash == payee.payment_hash  # asked again: the same invoice

    price = awarded.bid_payload.price_msat
    plain = job_submit(
        a.keys, b.pubkey, REQUEST, salt, job_id=awarded.job_id, award=awarded.award.id, privacy=1, max_cost_msat=price
    )
    # 1. unpaid: no proof at all, then the preimage of B's invoice before it is paid (B's wallet says open)
    unpaid = await post_job(b, plain)
    assert (unpaid.status_code, unpaid.json()["error"]["code"]) == (402, "payment_required")
    early = paid.ledger.invoices[payee.payment_hash].preimage  # only the test's ledger knows it before payment
    not_settled = await post_job(
        b, with_payment(plain, a.keys, JobPayment(payment_hash=payee.payment_hash, preimage=early))
    )
    assert (not_settled.status_code, not_settled.json()["error"]["code"]) == (402, "payment_invalid")
    assert "not settled" in not_settled.json()["error"]["message"]

    # 2. another award's invoice, paid: refused for this award
    other_preimage = await paid.pay(other_payee)
    other_proof = JobPayment(payment_hash=other_payee.payment_hash, preimage=other_preimage)
    crossed = await post_job(b, with_payment(plain, a.keys, other_proof))
    assert (crossed.status_code, crossed.json()["error"]["code"]) == (402, "payment_invalid")
    # a preimage that does not match the payment hash
    wrong = JobPayment(payment_hash=payee.payment_hash, preimage=other_preimage)
    mismatch = await post_job(b, with_payment(plain, a.keys, wrong))
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (402, "payment_invalid")
    # 3. paid, but naming a refund destination nobody can pay: refused before the proof is claimed
    preimage = await paid.pay(payee)
    bad_to = JobPayment(payment_hash=payee.payment_hash, preimage=preimage, refund_to="ftp://example.invalid/r")
    bad_destination = await post_job(b, with_payment(plain, a.keys, bad_to))
    assert (bad_destination.status_code, bad_destination.json()["error"]["code"]) == (402, "payment_invalid")
    assert "refund_to" in bad_destination.json()["error"]["message"]
    assert node.calls == 0
    assert await b.service.pool.fetchval("SELECT status FROM federation_jobs WHERE job_id = $1", awarded.job_id) == (
        "awarded"
    )

    # 4. paid by the client: A submits with the proof, B runs it once, its receipt names the payment hash
    assert paid.ledger.nodes["provider"].balance_msat == payee.amount_msat + other_payee.amount_msat
    assert paid.ledger.nodes["requester"].balance_msat == 0  # A never received (nor paid) the provider's money
    client_event = seal(paid.client_keys, Kind.INFER_REQUEST, REQUEST, to=a.pubkey, nonce=True)
    origin = Origin(client_event.pubkey, client_event.id)
    answer = await paid.offloading.run_paid(origin, REQUEST, awarded, salt, payee, PaidJob(None, preimage))
    assert node.calls == 1
    offload = decode_payload(answer.content, InferResult).offload
    assert offload is not None
    receipt = decode_payload(offload.receipt.content, Receipt)
    assert receipt.payment_hash == payee.payment_hash and offload.receipt.pubkey == b.pubkey
    # no destination was named: B states it keeps what the job did not use
    kept = payee.amount_msat - receipt.price_msat
    assert receipt.settlement == Settlement(
        role="provider",
        payment_hash=payee.payment_hash,
        quoted_msat=payee.amount_msat,
        used_msat=receipt.price_msat,
        refund_msat=0,
        kept_msat=kept,
    )
    # A's spend cap counts the msat settled (the invoice), not the receipt's usage price
    spent = await a.service.pool.fetchval("SELECT spent_msat FROM federation_jobs WHERE job_id = $1", awarded.job_id)
    assert spent == payee.amount_msat

    # 5. the same proof again (a new submit event): refused, nothing runs twice
    replayed = await post_job(
        b, with_payment(plain, a.keys, JobPayment(payment_hash=payee.payment_hash, preimage=preimage))
    )
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (409, "payment_used")
    assert node.calls == 1


async def test_only_the_awarded_requester_gets_an_invoice_and_only_for_the_price(paid: Paid) -> None:
    a, b = paid.pair.a, paid.pair.b
    awarded, _ = await paid.award()
    stranger = Keys.generate()
    price = awarded.bid_payload.price_msat
    expires = int(time.time()) + 120
    client = paid.client_keys.pubkey

    async def ask(signer: Keys, amount: int) -> httpx.Response:
        body = InvoiceRequest(
            quote="q",
            client=client,
            router=signer.pubkey,
            amount_msat=amount,
            expires_at=expires,
            award=awarded.award.id,
        )
        event = seal(signer, Kind.INVOICE_REQUEST, body, to=b.pubkey, nonce=True, expiration=expires)
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(b.url + "/federation/invoice", content=event.to_json())

    by_stranger = await ask(stranger, price)
    assert (by_stranger.status_code, by_stranger.json()["error"]["code"]) == (403, "forbidden")
    more = await ask(a.keys, price + 1)
    assert (more.status_code, more.json()["error"]["code"]) == (400, "invalid_request")
    assert paid.ledger.invoices == {}  # no invoice was created for a refused request
    ok = await ask(a.keys, price)
    assert ok.status_code == 200, ok.text
    assert len(paid.ledger.invoices) == 1


async def test_a_paying_requester_awards_no_peer_that_takes_no_lightning(
    database_url: str, db_pool: asyncpg.Pool, b_database: str, tls: SelfSigned, tmp_path: Path
) -> None:
    ledger = Ledger()
    ledger.add_node("requester", balance_msat=0)
    async with running_lnd(ledger, "requester", tls, tmp_path) as a_wallet:
        a_options = {"require_payment": True, "wallet": a_wallet.spec, "ln_network": NETWORK, "auction_ttl_ms": 1500}
        async with duo(database_url, db_pool, b_database, a_options=a_options) as pair:  # B: no wallet
            view = pair.a.service.federation.peers.view(pair.b.pubkey)
            assert view is not None and view.caps.settlement == ["none"]
            salt = new_salt()
            rfb = Rfb(
                job_type="text-generation",
                model=MODEL,
                privacy=1,
                input_tokens=estimate_tokens(len(prompt_material(REQUEST))),
                max_tokens=REQUEST.max_tokens,
                max_price_msat=100_000,
                job_hash=job_hash(REQUEST, salt),
                deadline_ms=int(time.time() * 1000) + 60_000,
            )
            assert await pair.auctioneer.auction(rfb, ttl_s=1.5, expect={pair.b.pubkey}) is None
            registry = pair.a.service.metrics.registry
            refused = registry.get_sample_value(
                "fedai_router_auction_events_total", {"kind": "bid", "result": "no_settlement"}
            )
            assert refused is not None and refused >= 1


async def test_a_paid_job_that_fails_is_released_and_the_same_proof_serves_the_retry_once(paid: Paid) -> None:
    a, b, node = paid.pair.a, paid.pair.b, paid.pair.node
    awarded, salt = await paid.award()
    payee = await paid.invoice(awarded)
    proof = JobPayment(payment_hash=payee.payment_hash, preimage=await paid.pay(payee))
    price = awarded.bid_payload.price_msat
    plain = job_submit(
        a.keys, b.pubkey, REQUEST, salt, job_id=awarded.job_id, award=awarded.award.id, privacy=1, max_cost_msat=price
    )
    status = "SELECT status FROM federation_jobs WHERE job_id = $1"
    node.behaviour = "error_500"  # the provider's node fails after the provider was paid
    failed = await post_job(b, with_payment(plain, a.keys, proof))
    assert failed.status_code >= 500 and node.calls >= 1
    assert await b.service.pool.fetchval(status, awarded.job_id) == "awarded"  # released, not consumed
    node.behaviour, failed_calls = "ok", node.calls
    deadline = time.monotonic() + 20
    while (retried := await post_job(b, with_payment(plain, a.keys, proof))).status_code == 503:
        assert retried.json()["error"]["code"] == "no_capacity" and time.monotonic() < deadline  # node cooling down
        await asyncio.sleep(0.5)
    assert retried.status_code == 200, retried.text
    assert node.calls == failed_calls + 1
    assert await b.service.pool.fetchval(status, awarded.job_id) == "done"
    again = await post_job(b, with_payment(plain, a.keys, proof))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "payment_used")
    assert node.calls == failed_calls + 1
