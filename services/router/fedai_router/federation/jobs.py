"""POST /federation/job — the provider side of an offloaded job.

A peer router that won our auction sends a signed job.submit bound to its award. We check the award is ours,
unused and not past its deadline, open the payload (NIP-44 at PL1/PL2), check it is exactly the job the bid was
for (`binding_problems`: the RFB's salted hash, model, job type, privacy and at most its sizes), run it on our
own nodes through the normal scheduler and verified dispatch, and answer with a signed job.result carrying the
output (sealed back at PL1/PL2), our signed receipt and our chain down to the node. A refused submit writes
nothing and leaves the award usable: only the awarded requester can get that far (its signature is checked
first), and the award's deadline bounds how long it stays usable. Nothing about the job's content is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import asyncpg
from prometheus_client import CollectorRegistry

from fedai.observability.tracing import span
from fedai.protocol import nip44
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import (
    PL0_PUBLIC,
    PL3_LOCAL,
    JobResult,
    JobSubmit,
    Receipt,
    SealedJob,
    SealedOutput,
    job_hash,
    job_request,
)
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    DEFAULT_JOB_TYPE,
    InferenceRequest,
    InferenceResponse,
    InferResult,
    InvoiceRequest,
    Settlement,
    Usage,
    decode_payload,
    encode_payload,
    estimate_tokens,
    price_msat,
    prompt_material,
)
from fedai_router.claims import Claims
from fedai_router.completion import Completion, Origin
from fedai_router.config import RouterSettings
from fedai_router.dispatch import Dispatcher, Served
from fedai_router.federation.bidder import Bidder
from fedai_router.federation.events import auction_events
from fedai_router.federation.settlement import ProviderSettlement
from fedai_router.intake import Intake
from fedai_router.planning import Planner
from fedai_router.pricing import Fees
from fedai_router.store import federation as jobs_store

AWARD_WAIT_S = 2.0  # the award travels by relay, the job by HTTP: the job may arrive first
FIRST_POLL_S = 0.02  # then doubling up to MAX_POLL_S: about a dozen lookups in AWARD_WAIT_S
MAX_POLL_S = 0.25


def binding_problems(terms: jobs_store.JobTerms, request: InferenceRequest, input_sha256: str) -> list[str]:
    """How a submitted job (already checked to hash to `input_sha256`) differs from what the bid was for; empty
    when it is that job. The hash binds the job to the RFB's own hash; the fields bind it to what the RFB
    declared (an RFB may declare a small job and hash a large one). Pure."""
    problems = []
    if input_sha256 != terms.job_hash:
        problems.append("job hash")
    if request.model != terms.model:
        problems.append("model")
    if (request.job_type or DEFAULT_JOB_TYPE) != terms.job_type:
        problems.append("job type")
    if request.max_tokens > terms.max_tokens:
        problems.append("max_tokens")
    if estimate_tokens(len(prompt_material(request))) > terms.input_tokens:
        problems.append("input size")
    return problems


def award_refusal(award: jobs_store.AwardRow | None, sender: str, submit: JobSubmit, now: float) -> FedaiError | None:
    """Why a job.submit from `sender` may not run under `award` (our stored award for it, if any), or None. Pure."""
    if award is None or award.role != "provider" or award.peer != sender or award.job_id != submit.job_id:
        return FedaiError(ErrorCode.FORBIDDEN, "no award of this router matches this job and sender")
    if award.terms is None:
        return FedaiError(ErrorCode.FORBIDDEN, "this award was stored without the terms of its bid")
    if now * 1000 > award.terms.deadline_ms:
        return FedaiError(ErrorCode.EXPIRED, "the award's deadline has passed")
    if submit.privacy >= PL3_LOCAL:
        return FedaiError(ErrorCode.FORBIDDEN, "a PL3 job is never offloaded")
    if submit.privacy != award.privacy:
        return FedaiError(ErrorCode.INVALID_REQUEST, "the job's privacy level is not the one awarded")
    return None


class Provider:
    """`POST /federation/job`: run a job a peer router was awarded by us on our own nodes."""

    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        intake: Intake,
        claims: Claims,
        planner: Planner,
        dispatcher: Dispatcher,
        completion: Completion,
        pool: asyncpg.Pool,
        metrics: CollectorRegistry,
        bidder: Callable[[], Bidder | None],
        fees: Fees,
        settlement: ProviderSettlement,
    ) -> None:
        self.keys = keys  # signs the receipt and the result; PL1/PL2 jobs are sealed to us
        self.settings = settings  # the privacy levels we accept
        self.fees = fees  # our fee in force (the admin API's, else ROUTER_FEE_*), as our bids used it
        self.intake = intake
        self.claims = claims
        self.planner = planner
        self.dispatcher = dispatcher
        self.completion = completion
        self.pool = pool  # federation_jobs
        self.bidder = bidder  # our open bids (None before federation starts, or with bidding off)
        self.counter = auction_events(metrics)
        self.settlement = settlement  # paid jobs: our invoice for an award, the proof checked before running

    async def handle(self, body: bytes) -> Event:
        try:
            with span("router.job", {"fedai.role": "provider"}):
                answer = await self._handle(body)
        except FedaiError as err:
            self.counter.labels("submit", err.code.value).inc()
            raise
        self.counter.labels("submit", "ok").inc()
        return answer

    async def _handle(self, body: bytes) -> Event:
        opened = self.intake.open_addressed(body, JobSubmit, Kind.JOB_SUBMIT)
        event, submit = opened.event, opened.payload
        award = await self._award_for(submit.award, submit.job_id, event.pubkey)
        refusal = award_refusal(award, event.pubkey, submit, time.time())
        if refusal is not None:
            raise refusal
        assert award is not None and award.terms is not None
        request, _salt = self._open_payload(event, submit)
        if submit.privacy > self.settings.max_privacy(request.job_type):
            raise FedaiError(ErrorCode.FORBIDDEN, f"privacy level {submit.privacy} is above what this router accepts")
        problems = binding_problems(award.terms, request, submit.input_sha256)
        if problems:
            raise FedaiError(ErrorCode.FORBIDDEN, "the job is not the one bid on: " + ", ".join(problems) + " differ")
        payment_hash = await self.settlement.verify(award, submit)  # None: an unpaid job we take
        await self.claims.claim(event)
        await self._start(submit.job_id, payment_hash)
        started_ms = int(time.time() * 1000)
        origin = Origin(event.pubkey, event.id)
        try:
            plan = await self.planner.plan(event.pubkey, request)
            served = await self.dispatcher.serve(origin, request, plan.candidates, limits=plan.limits)
        except FedaiError:
            if payment_hash is None:
                await jobs_store.set_job_status(self.pool, submit.job_id, "failed")
            else:  # paid: the same proof serves a retry of this award until its deadline
                await self.settlement.release(submit.job_id)
            raise
        await self.completion.record(origin, served.metered)
        refund_to = None if submit.payment is None else submit.payment.refund_to
        price = self._price(served, award.price_msat)
        statement = self.settlement.statement(payment_hash, award.price_msat, price, refund_to)
        receipt = self._receipt(event, submit, served, price, started_ms, payment_hash, statement)
        result = self._result(event, submit, served, receipt)
        await jobs_store.set_job_status(self.pool, submit.job_id, "done", receipt)
        await self.settlement.after_job(statement, refund_to)
        return seal(self.keys, Kind.JOB_RESULT, result, to=event.pubkey, reply_to=event.id)

    async def _start(self, job_id: str, payment_hash: str | None) -> None:
        """awarded → running, exactly once across replicas; a paid job only with its award's invoice."""
        if payment_hash is not None:
            await self.settlement.start(job_id, payment_hash)
        elif not await jobs_store.start_job(self.pool, job_id):
            raise FedaiError(ErrorCode.REPLAY, "this award's job was already submitted")

    async def handle_invoice(self, body: bytes) -> Event:
        """`POST /federation/invoice`: the awarded requester's signed invoice.request (`award` set) → our signed
        payment.invoice (role `provider`) for the award's price, from our own wallet."""
        opened = self.intake.open_addressed(body, InvoiceRequest, Kind.INVOICE_REQUEST)
        ask = opened.payload
        if ask.award is None:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "an invoice request to a provider router names its award")
        award = await self._award_for(ask.award, None, opened.event.pubkey)  # may still be on its way by relay
        await self.claims.claim(opened.event)
        return await self.settlement.invoice(opened.event.pubkey, ask, award)

    def _open_payload(self, event: Event, submit: JobSubmit) -> tuple[InferenceRequest, str]:
        """The job and the salt of its hash, checked to hash to the submit's `input_sha256`."""
        if submit.privacy == PL0_PUBLIC:
            if submit.request is None or submit.salt is None or submit.sealed is not None:
                raise FedaiError(ErrorCode.INVALID_REQUEST, "a PL0 job carries `request` and `salt` and no `sealed`")
            request, salt = submit.request, submit.salt
        elif submit.sealed is None or submit.request is not None or submit.salt is not None:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a PL1/PL2 job carries only `sealed` (the job and its salt)")
        else:
            opened = decode_payload(nip44.decrypt(self.keys, event.pubkey, submit.sealed), SealedJob)
            request, salt = opened.request, opened.salt
        if request != job_request(request):
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a job may carry only the model, prompt and sampling options")
        if job_hash(request, salt) != submit.input_sha256:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "the job does not hash to its input_sha256")
        return request, salt

    async def _award_for(self, award_id: str, job_id: str | None, requester: str) -> jobs_store.AwardRow | None:
        """Our stored award. When it is not stored yet, wait briefly for it to arrive from the relay, but only if we
        hold an open bid for this requester (an award from it may be on its way) and within its waiting budget (one
        wait per open bid, `Bidder.begin_award_wait`): a submit naming a random award costs one lookup."""
        award = await jobs_store.find_award(self.pool, award_id)
        bidder = self.bidder()
        if award is not None or bidder is None or not bidder.begin_award_wait(requester):
            return award
        try:
            deadline, pause = time.monotonic() + AWARD_WAIT_S, FIRST_POLL_S
            while (left := deadline - time.monotonic()) > 0:
                accepted_here = await self._wait(bidder, job_id, min(pause, left))  # wakes when we accept it
                award = await jobs_store.find_award(self.pool, award_id)  # another replica may have accepted it
                if award is not None or accepted_here:
                    return award
                pause = min(pause * 2, MAX_POLL_S)
            return None
        finally:
            bidder.end_award_wait(requester)

    @staticmethod
    async def _wait(bidder: Bidder, job_id: str | None, pause: float) -> bool:
        """Wait `pause` (or less, when we accept the award of `job_id` here); True when we did."""
        if job_id is None:  # an invoice request names the award only
            await asyncio.sleep(pause)
            return False
        return await bidder.wait_accepted(job_id, pause)

    def _price(self, served: Served, awarded_msat: int) -> int:
        """What the job cost: the node's price plus our fee, never above the award."""
        record = served.record
        node_price = price_msat(served.node.models[record.model].pricing, record.input_tokens, record.output_tokens)
        fee = self.fees.base_msat + -(-node_price * self.fees.ppm // 1_000_000)
        return min(awarded_msat, node_price + fee)

    def _receipt(
        self,
        event: Event,
        submit: JobSubmit,
        served: Served,
        price: int,
        started_ms: int,
        paid: str | None,
        statement: Settlement | None,
    ) -> Event:
        """Our signed receipt: the job's price and, for a paid job, our statement of its invoice."""
        record = served.record
        output = decode_payload(served.response.content, InferenceResponse).output
        terms = Receipt(
            job_id=submit.job_id,
            job_submit=event.id,
            requester=event.pubkey,
            provider=self.keys.pubkey,
            input_sha256=submit.input_sha256,
            output_sha256=hashlib.sha256(output.encode()).hexdigest(),
            usage=Usage(input_tokens=record.input_tokens, output_tokens=record.output_tokens),
            price_msat=price,
            status="ok",
            started_ms=started_ms,
            finished_ms=int(time.time() * 1000),
            payment_hash=paid,
            settlement=statement,
        )
        return seal(self.keys, Kind.JOB_RECEIPT, terms, to=event.pubkey, reply_to=event.id)

    def _result(self, event: Event, submit: JobSubmit, served: Served, receipt: Event) -> JobResult:
        """The output, the receipt and our chain down to the node: in the clear at PL0, sealed at PL1/PL2."""
        output = decode_payload(served.response.content, InferenceResponse).output
        chain = InferResult(
            forwarded=served.forwarded, response=served.response, metering=served.metering, node=served.node.pubkey
        )
        if submit.privacy == PL0_PUBLIC:
            return JobResult(job_id=submit.job_id, output=output, receipt=receipt, chain=chain)
        sealed = nip44.encrypt(self.keys, event.pubkey, encode_payload(SealedOutput(output=output, chain=chain)))
        return JobResult(job_id=submit.job_id, sealed_output=sealed, receipt=receipt)
