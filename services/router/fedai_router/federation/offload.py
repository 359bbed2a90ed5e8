"""Offloading a request this router cannot serve: auction it to peers, send the job to the winner, verify the
result, its receipt and the provider's chain down to its node, and answer the client with all of it.

Only requests at privacy PL0-PL2 (and within this router's maximum for the job type) leave; PL3 never does. A
job leaves at the client's level raised to `ROUTER_FED_MIN_PRIVACY` (PL1 by default: sealed to the provider),
never lower. Each auction gets a fresh secret salt for the job's hash; the client gets it in the answer's
`offload` to check the hash. Spend per peer is capped per window (reserved before the award, settled to the
receipt's price, released on failure) and per job; a peer that fails is excluded from the retry, which runs a
new auction within the per-request attempt budget.
"""

from __future__ import annotations

import logging
import time

import aiohttp
import asyncpg

from fedai.observability.tracing import span
from fedai.protocol import nip44
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import (
    PL0_PUBLIC,
    PL3_LOCAL,
    Bid,
    JobPayment,
    JobSubmit,
    Rfb,
    SealedJob,
    job_hash,
    job_request,
    new_salt,
)
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    DEFAULT_JOB_TYPE,
    InferenceRequest,
    MeteringRecord,
    Offload,
    Payee,
    decode_payload,
    encode_payload,
    estimate_tokens,
    prompt_material,
)
from fedai_router.completion import Completion, Metered, Origin
from fedai_router.config import RouterSettings
from fedai_router.federation.auction import Auctioneer, Awarded
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.provider_invoice import InvoiceFor, ask_provider_invoice
from fedai_router.federation.result_check import MAX_RESULT_BYTES, ResultCheck, Submitted
from fedai_router.metrics import RouterMetrics
from fedai_router.offloading import PaidJob, WonJob
from fedai_router.outbound import Outbound
from fedai_router.store import federation as jobs_store

log = logging.getLogger("fedai.router.federation")


class Offloading:
    """The requester side of an offloaded job (the request path reaches it as an `Offloader`)."""

    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        auctioneer: Auctioneer,
        peers: PeerBook,
        outbound: Outbound,
        pool: asyncpg.Pool,
        completion: Completion,
        metrics: RouterMetrics,
    ) -> None:
        self.keys = keys  # signs the submit; results are sealed to us
        self.settings = settings  # ROUTER_FED_*
        self.auctioneer = auctioneer
        self.peers = peers  # the winner's endpoint
        self.outbound = outbound
        self.pool = pool  # federation_jobs
        self.completion = completion
        self.metrics = metrics
        self.check = ResultCheck(
            keys, settings.clock_skew_s, settings.input_tokens_per_byte, settings.input_tokens_overhead
        )

    def may_leave(self, request: InferenceRequest) -> bool:
        """The request's privacy lets it leave this router."""
        privacy = self.settings.offload_privacy(request.privacy)
        return privacy < PL3_LOCAL and privacy <= self.settings.max_privacy(request.job_type)

    async def offload(self, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
        """Serve `request` through a peer; raise `local` (why we could not serve it ourselves) if no peer can."""
        settings, auctioneer = self.settings, self.auctioneer
        # the client's cap (0 means 0, not "unset"), never above what this router spends per job
        cap = settings.fed_max_cost_msat
        if request.max_price_msat is not None:
            cap = min(request.max_price_msat, cap)
        excluded: set[str] = set()
        last: FedaiError = local
        for attempt in range(settings.fed_max_attempts):
            salt = new_salt()  # per auction: retries of one request cannot be linked on relays by their hash
            # the winner's price is reserved against its spend cap before the award (Auctioneer._award)
            with span("router.auction", {"fedai.model": request.model, "fedai.attempt": attempt + 1}):
                awarded = await auctioneer.auction(  # anti-thrash keyed on this request: others are not held back
                    self._rfb(request, cap, salt),
                    exclude=frozenset(excluded),
                    retry=attempt > 0,
                    origin_id=client_event.id,
                    key=client_event.id,
                )
            if awarded is None:
                break
            try:
                with span("router.job", {"fedai.role": "requester", "fedai.peer": awarded.peer}):
                    answer = await self._run(Origin(client_event.pubkey, client_event.id), request, awarded, salt)
            except FedaiError as err:
                log.info("offloaded job failed", extra={"peer": awarded.peer[:16], "code": err.code.value})
                auctioneer.record_outcome(awarded.peer, ok=False)
                await jobs_store.set_job_status(self.pool, awarded.job_id, "failed")
                self.metrics.offloads.labels(err.code.value).inc()
                excluded.add(awarded.peer)
                last = err
                continue
            auctioneer.record_outcome(awarded.peer, ok=True)
            self.metrics.offloads.labels("ok").inc()
            return answer
        raise last

    async def win_job(self, request: InferenceRequest, *, hold_s: int, key: str) -> tuple[Awarded, str] | None:
        """Auction exactly `request`'s job for a client's quote (docs/payments.md#federation-settlement): the award
        stays valid `hold_s` longer than a job's own time, for the client to pay before the job is submitted.
        The winner and its salt, or None."""
        salt = new_salt()
        rfb = self._rfb(request, self.settings.fed_max_cost_msat, salt, hold_s=hold_s)
        with span("router.auction", {"fedai.model": request.model, "fedai.attempt": 1}):
            awarded = await self.auctioneer.auction(rfb, key=key, origin_id=key)
        return None if awarded is None else (awarded, salt)

    def _rfb(self, request: InferenceRequest, cap: int, salt: str, *, hold_s: int = 0) -> Rfb:
        settings = self.settings
        return Rfb(
            job_type=request.job_type or DEFAULT_JOB_TYPE,
            model=request.model,
            privacy=settings.offload_privacy(request.privacy),
            input_tokens=estimate_tokens(len(prompt_material(request))),
            max_tokens=request.max_tokens,
            max_price_msat=cap,
            job_hash=job_hash(request, salt),
            # each attempt gets the full time (and a quoted job the time its client has to pay)
            deadline_ms=int(time.time() * 1000) + hold_s * 1000 + settings.fed_job_timeout_ms,
        )

    def _endpoint(self, peer: str) -> str:
        endpoint = self.peers.endpoint(peer)
        if endpoint is None:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, "the winning peer has announced no endpoint")
        return endpoint.rstrip("/")

    async def provider_invoice(self, awarded: Awarded, wanted: InvoiceFor) -> Payee:
        """The winner's own invoice for `awarded` (checked), to list in the client's payment request."""
        timeout_s = self.settings.node_timeout_ms / 1000
        return await ask_provider_invoice(
            self.keys,
            self.outbound,
            self._endpoint(awarded.peer),
            awarded,
            wanted,
            network=self.settings.ln_network,
            timeout_s=timeout_s,
        )

    async def run_paid(
        self, origin: Origin, request: InferenceRequest, awarded: Awarded, salt: str, paid: Payee, job: PaidJob
    ) -> Event:
        """Submit the job of `awarded` with the proof that the provider's invoice `paid` was paid (by the client:
        never from this router's wallet) and the client's refund destination; the receipt must name its payment
        hash, and our answer states our fee on the price the receipt states."""
        payment = JobPayment(payment_hash=paid.payment_hash, preimage=job.preimage, refund_to=job.refund_to)
        try:
            with span("router.job", {"fedai.role": "requester", "fedai.peer": awarded.peer}):
                answer = await self._run(origin, request, awarded, salt, payment, paid.amount_msat, job)
        except FedaiError as err:
            # the award stays usable: a paid job that failed is released by the provider, and the same proof
            # retries it until its deadline (a failed or cancelled row would refuse the retry here)
            self.auctioneer.record_outcome(awarded.peer, ok=False)
            self.metrics.offloads.labels(err.code.value).inc()
            raise
        self.auctioneer.record_outcome(awarded.peer, ok=True)
        self.metrics.offloads.labels("ok").inc()
        return answer

    def _submit(
        self, request: InferenceRequest, awarded: Awarded, salt: str, payment: JobPayment | None = None
    ) -> Submitted:
        """The signed job.submit for the award: the job and its salt in the clear at PL0, sealed at PL1/PL2."""
        peer, price = awarded.peer, awarded.bid_payload.price_msat
        job, privacy = job_request(request), self.settings.offload_privacy(request.privacy)
        clear = privacy == PL0_PUBLIC  # at PL1/PL2 the job and its salt are sealed to the provider
        sealed = None if clear else nip44.encrypt(self.keys, peer, encode_payload(SealedJob(request=job, salt=salt)))
        payload = JobSubmit(
            job_id=awarded.job_id,
            award=awarded.award.id,
            privacy=privacy,
            request=job if clear else None,
            salt=salt if clear else None,
            sealed=sealed,
            input_sha256=job_hash(request, salt),
            max_cost_msat=price,
            payment=payment,
        )
        submit = seal(self.keys, Kind.JOB_SUBMIT, payload, to=peer, nonce=True)
        return Submitted(peer, submit, payload, request, price)

    async def _run(
        self,
        origin: Origin,  # whom the answer is for: the client and the event that asked
        request: InferenceRequest,
        awarded: Awarded,
        salt: str,
        payment: JobPayment | None = None,
        paid_msat: int = 0,
        paid: PaidJob | None = None,  # its payment request is shown to the client, who checks the receipt against it
    ) -> Event:
        job = self._submit(request, awarded, salt, payment)
        timeout = aiohttp.ClientTimeout(total=self.settings.fed_job_timeout_ms / 1000)
        url = self._endpoint(job.peer) + "/federation/job"  # judged again where the connection is made (outbound)
        body = await self.outbound.exchange(
            url, job.submit, target="peer", client_timeout=timeout, limit=MAX_RESULT_BYTES
        )
        checked = self.check.verify(job, body)
        receipt, chain = checked.receipt, checked.chain
        if receipt.payment_hash != (payment.payment_hash if payment else None):
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, "the provider's receipt does not name the payment made")
        spent = paid_msat if payment else receipt.price_msat  # a paid job counts what was settled
        await jobs_store.settle_job(self.pool, awarded.job_id, checked.result.receipt, spent)
        record = decode_payload(chain.metering.content, MeteringRecord)
        metered = Metered(chain.node, chain.forwarded, chain.response, chain.metering, record)
        offloaded = Offload(
            submit=job.submit,
            result=checked.event,
            receipt=checked.result.receipt,
            provider=job.peer,
            salt=salt,
            payment_request=None if paid is None else paid.request,
        )
        stating = None if paid is None else paid.fee_statement
        statement = None if stating is None else stating(receipt.price_msat)  # our fee on the provider's price
        return await self.completion.answer(origin, metered, offload=offloaded, settlement=statement)


def won_job(awarded: Awarded, salt: str) -> WonJob:
    """What the request path keeps of an award won for a quote (to invoice and run it later). Pure."""
    rfb = decode_payload(awarded.rfb.content, Rfb)
    return WonJob(
        job_id=awarded.job_id,
        provider=awarded.peer,
        price_msat=awarded.bid_payload.price_msat,
        salt=salt,
        job_hash=rfb.job_hash,
        deadline_s=rfb.deadline_ms // 1000,
        rfb=awarded.rfb,
        bid=awarded.bid,
        award=awarded.award,
    )


def awarded_of(job: WonJob) -> Awarded:
    """The award back from what the request path kept (its events were checked when it was won). Pure."""
    bid = decode_payload(job.bid.content, Bid)
    return Awarded(job_id=job.job_id, award=job.award, bid=job.bid, bid_payload=bid, peer=job.provider, rfb=job.rfb)
