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

import hashlib
import logging
import time

import aiohttp
import msgspec

from fedai.protocol import nip44
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.federation import (
    PL0_PUBLIC,
    PL3_LOCAL,
    JobResult,
    JobSubmit,
    Receipt,
    Rfb,
    SealedJob,
    SealedOutput,
    job_hash,
    job_request,
    new_salt,
)
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    DEFAULT_JOB_TYPE,
    InferenceRequest,
    InferResult,
    MeteringRecord,
    NodeReply,
    Offload,
    decode_payload,
    encode_payload,
    estimate_tokens,
    prompt_material,
    prompt_sha256,
)
from fedai_router.dispatch import error_from_reply
from fedai_router.federation.auction import Awarded
from fedai_router.service import RouterService
from fedai_router.store import federation as jobs_store
from fedai_router.store.metering import MeteringEntry
from fedai_router.verify import Binding, NodeFault, reply_limits, verify_reply

log = logging.getLogger("fedai.router.federation")

MAX_RESULT_BYTES = 16 * 1024 * 1024


def can_offload(svc: RouterService, request: InferenceRequest) -> bool:
    """Federation is on and the request may leave this router."""
    privacy = svc.settings.offload_privacy(request.privacy)
    return (
        getattr(svc, "auctioneer", None) is not None
        and privacy < PL3_LOCAL
        and privacy <= svc.settings.max_privacy(request.job_type)
    )


async def offload(svc: RouterService, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
    """Serve `request` through a peer; raise `local` (why we could not serve it ourselves) if no peer can."""
    settings = svc.settings
    auctioneer = svc.auctioneer
    if auctioneer is None:
        raise local
    # the client's cap (0 means 0, not "unset"), never above what this router spends per job
    cap = settings.fed_max_cost_msat
    if request.max_price_msat is not None:
        cap = min(request.max_price_msat, cap)
    excluded: set[str] = set()
    last: FedaiError = local
    for attempt in range(settings.fed_max_attempts):
        salt = new_salt()  # per auction: retries of one request cannot be linked on relays by their hash
        rfb = Rfb(
            job_type=request.job_type or DEFAULT_JOB_TYPE, model=request.model,
            privacy=settings.offload_privacy(request.privacy),
            input_tokens=estimate_tokens(len(prompt_material(request))), max_tokens=request.max_tokens,
            max_price_msat=cap, job_hash=job_hash(request, salt),
            deadline_ms=int(time.time() * 1000) + settings.fed_job_timeout_ms,  # each attempt gets the full time
        )  # fmt: skip
        # the winner's price is reserved against its spend cap before the award (Auctioneer._award)
        awarded = await auctioneer.auction(  # anti-thrash keyed on this request: other clients are not held back
            rfb, exclude=frozenset(excluded), retry=attempt > 0, origin_id=client_event.id, key=client_event.id
        )
        if awarded is None:
            break
        try:
            answer = await _run(svc, client_event, request, awarded, salt)
        except FedaiError as err:
            log.info("offloaded job failed", extra={"peer": awarded.peer[:16], "code": err.code.value})
            auctioneer.record_outcome(awarded.peer, ok=False)
            await jobs_store.set_job_status(svc.pool, awarded.job_id, "failed")
            svc.metrics.offloads.labels(err.code.value).inc()
            excluded.add(awarded.peer)
            last = err
            continue
        auctioneer.record_outcome(awarded.peer, ok=True)
        svc.metrics.offloads.labels("ok").inc()
        return answer
    raise last


def _endpoint(svc: RouterService, peer: str) -> str:
    endpoint = svc.peers.endpoint(peer)
    if endpoint is None:
        raise FedaiError(ErrorCode.UPSTREAM_ERROR, "the winning peer has announced no endpoint")
    return endpoint.rstrip("/")


async def _run(
    svc: RouterService, client_event: Event, request: InferenceRequest, awarded: Awarded, salt: str
) -> Event:
    peer, job_id, price = awarded.peer, awarded.job_id, awarded.bid_payload.price_msat
    job, privacy = job_request(request), svc.settings.offload_privacy(request.privacy)
    clear = privacy == PL0_PUBLIC  # at PL1/PL2 the job and its salt are sealed to the provider
    sealed = None if clear else nip44.encrypt(svc.keys, peer, encode_payload(SealedJob(request=job, salt=salt)))
    payload = JobSubmit(
        job_id=job_id, award=awarded.award.id, privacy=privacy, request=job if clear else None,
        salt=salt if clear else None, sealed=sealed, input_sha256=job_hash(request, salt), max_cost_msat=price,
    )  # fmt: skip
    submit = seal(svc.keys, Kind.JOB_SUBMIT, payload, to=peer, nonce=True)
    timeout = aiohttp.ClientTimeout(total=svc.settings.fed_job_timeout_ms / 1000)
    url = _endpoint(svc, peer) + "/federation/job"  # judged again where the connection is made (outbound)
    reply = await svc.outbound.post_event(url, submit, target="peer", client_timeout=timeout, limit=MAX_RESULT_BYTES)
    if reply.status != 200:
        raise error_from_reply(reply.status, reply.body, reply.retry_after, who="provider")
    result_event, result, receipt, chain = _verify_result(svc, peer, submit, payload, request, reply.body, price)
    await jobs_store.settle_job(svc.pool, job_id, result.receipt, receipt.price_msat)  # the reservation -> the price
    await svc.metering.record(
        MeteringEntry(record=decode_payload(chain.metering.content, MeteringRecord), event=chain.metering,
                      origin_id=client_event.id, client=client_event.pubkey, node=chain.node)
    )  # fmt: skip
    offloaded = Offload(submit=submit, result=result_event, receipt=result.receipt, provider=peer, salt=salt)
    answer = msgspec.structs.replace(chain, offload=offloaded)
    return seal(svc.keys, Kind.INFER_RESPONSE, answer, to=client_event.pubkey, reply_to=client_event.id)


def _verify_result(
    svc: RouterService, peer: str, submit: Event, payload: JobSubmit, request: InferenceRequest, body: bytes,
    price: int,
) -> tuple[Event, JobResult, Receipt, InferResult]:  # fmt: skip
    """The provider's job.result: signed by it, for our submit; its receipt for this input and output at no more
    than the bid; and its chain down to its node verified as we verify our own nodes."""
    try:
        event = decode_event(body, MAX_RESULT_BYTES)
        result = open_event(event, JobResult, kinds=(Kind.JOB_RESULT,), recipient=svc.pubkey, signers=(peer,),
                            reply_to=submit.id, skew_s=svc.settings.clock_skew_s).payload  # fmt: skip
        receipt = open_event(result.receipt, Receipt, kinds=(Kind.JOB_RECEIPT,), recipient=svc.pubkey,
                             signers=(peer,), reply_to=submit.id, skew_s=svc.settings.clock_skew_s).payload  # fmt: skip
    except FedaiError as err:
        raise NodeFault(f"provider result failed verification: {err.code.value}: {err.message}") from None
    if payload.privacy == PL0_PUBLIC:
        if result.output is None or result.chain is None:
            raise NodeFault("a PL0 result carries the output and the chain")
        output, chain = result.output, result.chain
    else:
        if result.sealed_output is None:
            raise NodeFault("a PL1/PL2 result carries its output sealed")
        sealed = decode_payload(nip44.decrypt(svc.keys, peer, result.sealed_output), SealedOutput)
        output, chain = sealed.output, sealed.chain
    problems = []
    if (receipt.job_id, result.job_id) != (payload.job_id, payload.job_id) or receipt.job_submit != submit.id:
        problems.append("job")
    if (receipt.requester, receipt.provider) != (svc.pubkey, peer):
        problems.append("routers")
    if receipt.input_sha256 != payload.input_sha256:
        problems.append("input hash")
    if receipt.output_sha256 != hashlib.sha256(output.encode()).hexdigest():
        problems.append("output hash")
    if receipt.price_msat > price:
        problems.append("price above the bid")
    if receipt.status != "ok":
        problems.append(f"status {receipt.status}")
    if problems:
        raise NodeFault("provider receipt does not match: " + ", ".join(problems))
    _verify_provider_chain(svc, peer, submit, request, chain, output, receipt, price)
    return event, result, receipt, chain


def _verify_provider_chain(
    svc: RouterService, peer: str, submit: Event, request: InferenceRequest, chain: InferResult, output: str,
    receipt: Receipt, price: int,
) -> None:  # fmt: skip
    """The provider's chain: its forwarded request (for our submit, carrying exactly the job), the node's signed
    response and metering agreeing with the output and with the receipt, and within what the client agreed to:
    tokens within the job's bounds and a node price no higher than the bid (`price`), itself within the
    client's cap. The provider's node pricing is never announced to us, so the bid is the price bound."""
    try:
        forwarded = open_event(chain.forwarded, InferenceRequest, kinds=(Kind.INFER_REQUEST,), recipient=chain.node,
                               signers=(peer,), skew_s=svc.settings.clock_skew_s).payload  # fmt: skip
    except FedaiError as err:
        raise NodeFault(f"provider chain: {err.code.value}: {err.message}") from None
    if forwarded.origin != submit.id or forwarded.client != svc.pubkey:
        raise NodeFault("provider chain is not for our job")
    if msgspec.structs.replace(forwarded, origin=None, client=None) != job_request(request):
        raise NodeFault("provider ran another request than the job")
    settings = svc.settings
    limits = reply_limits(
        request, price, tokens_per_byte=settings.input_tokens_per_byte, overhead=settings.input_tokens_overhead
    )
    binding = Binding(peer, chain.node, None, chain.forwarded, prompt_sha256(request), settings.clock_skew_s, limits)
    reply = encode_payload(NodeReply(response=chain.response, metering=chain.metering)).encode()
    record = verify_reply(reply, binding, streamed_output=output).record
    if record.output_sha256 != receipt.output_sha256:
        raise NodeFault("provider receipt's output hash is not its node's")
    if (record.input_tokens, record.output_tokens) != (receipt.usage.input_tokens, receipt.usage.output_tokens):
        raise NodeFault("provider receipt's usage is not its node's")
