"""POST /federation/job — the provider side of an offloaded job.

A peer router that won our auction sends a signed job.submit bound to its award. We check the award is ours
and unused, open the payload (NIP-44 at PL1/PL2), check it hashes to what the auction promised, run it on our
own nodes through the normal scheduler and verified dispatch, and answer with a signed job.result carrying the
output (sealed back at PL1/PL2), our signed receipt and our chain down to the node. Nothing about the job's
content is ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

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
    SealedOutput,
    job_hash,
    job_request,
)
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    InferResult,
    Usage,
    decode_payload,
    encode_payload,
    price_msat,
)
from fedai.store import federation as jobs_store
from fedai.store.metering import MeteringEntry
from fedai_router.dispatch import Origin
from fedai_router.infer import plan
from fedai_router.service import RouterService


def _open_payload(svc: RouterService, event: Event, submit: JobSubmit) -> InferenceRequest:
    if submit.privacy == PL0_PUBLIC:
        if submit.request is None or submit.sealed is not None:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a PL0 job carries `request` and no `sealed`")
        request = submit.request
    else:
        if submit.sealed is None or submit.request is not None:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "a PL1/PL2 job carries `sealed` and no `request`")
        request = decode_payload(nip44.decrypt(svc.keys, event.pubkey, submit.sealed), InferenceRequest)
    if request != job_request(request):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "a job may carry only the model, prompt and sampling options")
    if job_hash(request) != submit.input_sha256:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "the job does not hash to its input_sha256")
    return request


AWARD_WAIT_S = 2.0  # the award travels by relay, the job by HTTP: the job may arrive first


async def _award_for(svc: RouterService, award_id: str) -> jobs_store.AwardRow | None:
    """Our stored award, waiting briefly for it to arrive from the relay if the job overtook it."""
    deadline = time.monotonic() + AWARD_WAIT_S
    while (award := await jobs_store.find_award(svc.pool, award_id)) is None and time.monotonic() < deadline:  # noqa: ASYNC110 - another replica may store it: poll the database
        await asyncio.sleep(0.02)
    return award


async def handle_job(svc: RouterService, body: bytes) -> Event:
    opened = svc.open_addressed(body, JobSubmit, Kind.JOB_SUBMIT)
    event, submit = opened.event, opened.payload
    award = await _award_for(svc, submit.award)
    if award is None or award.role != "provider" or award.peer != event.pubkey or award.job_id != submit.job_id:
        raise FedaiError(ErrorCode.FORBIDDEN, "no award of this router matches this job and sender")
    if submit.privacy >= PL3_LOCAL:
        raise FedaiError(ErrorCode.FORBIDDEN, "a PL3 job is never offloaded")
    request = _open_payload(svc, event, submit)
    if submit.privacy > svc.settings.max_privacy(request.job_type):
        raise FedaiError(ErrorCode.FORBIDDEN, f"privacy level {submit.privacy} is above what this router accepts")
    if submit.privacy != award.privacy:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "the job's privacy level is not the one awarded")
    await svc.claim(event)
    if not await jobs_store.start_job(svc.pool, submit.job_id):
        raise FedaiError(ErrorCode.REPLAY, "this award's job was already submitted")
    started_ms = int(time.time() * 1000)
    try:
        p = await plan(svc, event.pubkey, request)
        served = await svc.dispatcher.serve(Origin(event.pubkey, event.id), request, p.candidates, limits=p.limits)
    except FedaiError:
        await jobs_store.set_job_status(svc.pool, submit.job_id, "failed")
        raise
    record = served.record
    await svc.metering.record(
        MeteringEntry(record=record, event=served.metering, origin_id=event.id, client=event.pubkey,
                      node=served.node.pubkey, attempt=served.attempts)
    )  # fmt: skip
    node_price = price_msat(served.node.models[record.model].pricing, record.input_tokens, record.output_tokens)
    fee = svc.settings.fee_base_msat + -(-node_price * svc.settings.fee_ppm // 1_000_000)
    output = decode_payload(served.response.content, InferenceResponse).output
    terms = Receipt(
        job_id=submit.job_id,
        job_submit=event.id,
        requester=event.pubkey,
        provider=svc.pubkey,
        input_sha256=submit.input_sha256,
        output_sha256=hashlib.sha256(output.encode()).hexdigest(),
        usage=Usage(input_tokens=record.input_tokens, output_tokens=record.output_tokens),
        price_msat=min(award.price_msat, node_price + fee),
        status="ok",
        started_ms=started_ms,
        finished_ms=int(time.time() * 1000),
    )
    receipt = seal(svc.keys, Kind.JOB_RECEIPT, terms, to=event.pubkey, reply_to=event.id)
    chain = InferResult(forwarded=served.forwarded, response=served.response, metering=served.metering,
                        node=served.node.pubkey)  # fmt: skip
    if submit.privacy == PL0_PUBLIC:
        result = JobResult(job_id=submit.job_id, output=output, receipt=receipt, chain=chain)
    else:
        sealed = nip44.encrypt(svc.keys, event.pubkey, encode_payload(SealedOutput(output=output, chain=chain)))
        result = JobResult(job_id=submit.job_id, sealed_output=sealed, receipt=receipt)
    await jobs_store.set_job_status(svc.pool, submit.job_id, "done", receipt)
    return seal(svc.keys, Kind.JOB_RESULT, result, to=event.pubkey, reply_to=event.id)
