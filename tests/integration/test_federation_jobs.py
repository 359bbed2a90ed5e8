"""POST /federation/job on the provider: a job bound to an award we accepted runs once on our nodes and is
answered with the output (sealed at PL1/PL2), a signed receipt and our chain; anything else is refused typed
and changes nothing."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from fedai.protocol import nip44
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.event import Event, decode_event
from fedai.protocol.federation import (
    JobResult,
    JobSubmit,
    Receipt,
    SealedJob,
    SealedOutput,
    job_hash,
    job_request,
    new_salt,
)
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, decode_payload, encode_payload, estimate_tokens, prompt_material
from fedai_router.store.federation import JobTerms, NewJob, insert_job
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter

pytestmark = pytest.mark.integration

REQUESTER = Keys.generate()
REQUEST = InferenceRequest(model="fake-model", prompt="offloaded prompt", max_tokens=8)


@dataclass
class Awarded:
    job_id: str
    award_id: str
    salt: str


def terms_for(request: InferenceRequest, salt: str, **over: Any) -> JobTerms:
    """What an honest RFB for `request` declares (as `offload` builds it)."""
    fields: dict[str, Any] = dict(
        job_type="text-generation",
        model=request.model,
        input_tokens=estimate_tokens(len(prompt_material(request))),
        max_tokens=request.max_tokens,
        job_hash=job_hash(request, salt),
        deadline_ms=int(time.time() * 1000) + 60_000,
    )
    fields.update(over)
    return JobTerms(**fields)


async def _award(
    pool: asyncpg.Pool,
    privacy: int = 0,
    requester: Keys = REQUESTER,
    *,
    request: InferenceRequest = REQUEST,
    **terms: Any,
) -> Awarded:
    job = Awarded(secrets.token_hex(16), secrets.token_hex(32), new_salt())
    stored = await insert_job(
        pool,
        NewJob(
            job_id=job.job_id,
            role="provider",
            peer=requester.pubkey,
            rfb_id="1" * 64,
            bid_id="2" * 64,
            award_id=job.award_id,
            capacity_token="3" * 32,
            price_msat=10_000,
            privacy=privacy,
            terms=terms_for(request, job.salt, **terms),
        ),
    )
    assert stored
    return job


def _submit(
    router: RunningRouter,
    awarded: Awarded,
    *,
    privacy: int = 0,
    request: InferenceRequest = REQUEST,
    input_sha256: str | None = None,
    signer: Keys = REQUESTER,
    raw: bool = False,
) -> Event:
    job = request if raw else job_request(request)
    sealed = SealedJob(request=job, salt=awarded.salt)
    payload = JobSubmit(
        job_id=awarded.job_id,
        award=awarded.award_id,
        privacy=privacy,
        request=job if privacy == 0 else None,
        salt=awarded.salt if privacy == 0 else None,
        sealed=None if privacy == 0 else nip44.encrypt(signer, router.pubkey, encode_payload(sealed)),
        input_sha256=input_sha256 or job_hash(request, awarded.salt),
        max_cost_msat=10_000,
    )
    return seal(signer, Kind.JOB_SUBMIT, payload, to=router.pubkey, nonce=True)


async def _post(router: RunningRouter, event: Event) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(router.url + "/federation/job", content=event.to_json())


@pytest.fixture
async def provider(router: RunningRouter, spawn_node: SpawnNode) -> RunningRouter:
    await spawn_node()
    return router


def _open_result(router: RunningRouter, submit: Event, body: bytes) -> tuple[JobResult, Receipt]:
    result = open_event(
        decode_event(body),
        JobResult,
        kinds=(Kind.JOB_RESULT,),
        recipient=REQUESTER.pubkey,
        signers=(router.pubkey,),
        reply_to=submit.id,
    ).payload
    receipt = open_event(
        result.receipt,
        Receipt,
        kinds=(Kind.JOB_RECEIPT,),
        recipient=REQUESTER.pubkey,
        signers=(router.pubkey,),
        reply_to=submit.id,
    ).payload
    return result, receipt


async def test_a_pl0_job_runs_once_with_a_signed_receipt(provider: RunningRouter, db_pool: asyncpg.Pool) -> None:
    awarded = await _award(db_pool)
    submit = _submit(provider, awarded)
    resp = await _post(provider, submit)
    assert resp.status_code == 200, resp.text
    result, receipt = _open_result(provider, submit, resp.content)
    assert result.output is not None and result.chain is not None
    assert receipt.output_sha256 == hashlib.sha256(result.output.encode()).hexdigest()
    assert (receipt.requester, receipt.provider, receipt.status) == (REQUESTER.pubkey, provider.pubkey, "ok")
    assert receipt.input_sha256 == job_hash(REQUEST, awarded.salt) and receipt.price_msat <= 10_000
    row = await db_pool.fetchrow("SELECT status, receipt FROM federation_jobs WHERE job_id = $1", awarded.job_id)
    assert row["status"] == "done" and row["receipt"]["id"] == result.receipt.id
    again = await _post(provider, submit)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "replay")
    other = await _post(provider, _submit(provider, awarded))  # a new submit for a used award
    assert (other.status_code, other.json()["error"]["code"]) == (409, "replay")


@pytest.mark.parametrize("privacy", [1, 2])
async def test_sealed_jobs_are_answered_sealed(provider: RunningRouter, db_pool: asyncpg.Pool, privacy: int) -> None:
    awarded = await _award(db_pool, privacy)
    submit = _submit(provider, awarded, privacy=privacy)
    assert REQUEST.prompt is not None and REQUEST.prompt not in submit.to_json().decode()
    resp = await _post(provider, submit)
    assert resp.status_code == 200, resp.text
    result, receipt = _open_result(provider, submit, resp.content)
    assert result.output is None and result.chain is None and result.sealed_output is not None
    sealed = decode_payload(nip44.decrypt(REQUESTER, provider.pubkey, result.sealed_output), SealedOutput)
    assert receipt.output_sha256 == hashlib.sha256(sealed.output.encode()).hexdigest()
    assert "fake answer" not in resp.text


async def test_refusals_change_nothing(provider: RunningRouter, db_pool: asyncpg.Pool) -> None:
    awarded = await _award(db_pool)
    stranger = Keys.generate()
    cases = [
        ("unknown award", _submit(provider, Awarded(awarded.job_id, "9" * 64, awarded.salt)), 403, "forbidden"),
        ("another requester", _submit(provider, awarded, signer=stranger), 403, "forbidden"),
        ("PL3", _submit(provider, awarded, privacy=3), 403, "forbidden"),
        ("other privacy than awarded", _submit(provider, awarded, privacy=1), 400, "invalid_request"),
        ("input hash mismatch", _submit(provider, awarded, input_sha256="0" * 64), 400, "invalid_request"),
        (
            "job with client fields",
            _submit(provider, awarded, raw=True, request=msgspec.structs.replace(REQUEST, client=stranger.pubkey)),
            400,
            "invalid_request",
        ),
    ]
    for name, event, status, code in cases:
        resp = await _post(provider, event)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), name
    assert await db_pool.fetchval("SELECT status FROM federation_jobs WHERE job_id = $1", awarded.job_id) == "awarded"
    assert await db_pool.fetchval("SELECT count(*) FROM metering_records") == 0
    ok = await _post(provider, _submit(provider, awarded))  # the award is still usable
    assert ok.status_code == 200


async def test_a_router_that_accepts_no_offloads_refuses_jobs(database_url: str, db_pool: asyncpg.Pool) -> None:
    from tests.support.router import reset_database, running_router

    await reset_database(db_pool)
    async with running_router(database_url, fed_max_privacy=0) as router:
        awarded = await _award(db_pool, privacy=1)
        resp = await _post(router, _submit(router, awarded, privacy=1))
    assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden")
