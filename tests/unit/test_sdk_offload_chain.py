"""The client's check of an offloaded answer: router A's job.submit carries exactly the client's request (by
hash at PL1/PL2), provider B's result and receipt answer that submit, and B's chain reaches B's node."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.federation import JobResult, JobSubmit, Receipt, job_hash, job_request, new_salt
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferenceResponse,
    InferResult,
    MeteringRecord,
    Offload,
    Usage,
    prompt_sha256,
)
from fedai.sdk.chain import ChainError, verify_chain

CLIENT, A, B, NODE, MALLORY = (Keys.generate() for _ in range(5))
REQUEST = InferenceRequest(model="m", prompt="what is 2+2?", max_tokens=16, max_price_msat=500)
JOB_ID = "ab" * 16
SALT = new_salt()


def build(
    *,
    privacy: int = 0,
    output: str = "4",
    receipt_changes: dict[str, object] | None = None,
    submit_request: InferenceRequest | None = None,
    provider: Keys = B,
    original: InferenceRequest = REQUEST,
    salt: str | None = SALT,
) -> tuple[Event, Event]:
    """A's answer to the client: `salt` is what A tells the client (the submit is always salted with SALT)."""
    request = seal(CLIENT, Kind.INFER_REQUEST, original, to=A.pubkey, nonce=True)
    job = job_request(original)
    submit_payload = JobSubmit(
        job_id=JOB_ID,
        award="c" * 64,
        privacy=privacy,
        request=(submit_request or job) if privacy == 0 else None,
        salt=SALT if privacy == 0 else None,
        sealed=None if privacy == 0 else "opaque",
        input_sha256=job_hash(original, SALT),
        max_cost_msat=400,
    )
    submit = seal(A, Kind.JOB_SUBMIT, submit_payload, to=B.pubkey, nonce=True)
    forwarded = seal(
        B,
        Kind.INFER_REQUEST,
        msgspec.structs.replace(job, client=A.pubkey, origin=submit.id),
        to=NODE.pubkey,
        nonce=True,
    )
    answer = InferenceResponse(
        model="m", output=output, finish_reason="stop", usage=Usage(input_tokens=4, output_tokens=1), latency_ms=1.0
    )
    response = seal(NODE, Kind.INFER_RESPONSE, answer, to=B.pubkey, reply_to=forwarded.id)
    out_hash = hashlib.sha256(output.encode()).hexdigest()
    record = MeteringRecord(
        request=forwarded.id,
        response=response.id,
        model="m",
        input_tokens=4,
        output_tokens=1,
        wall_ms=1.0,
        bytes_in=1,
        bytes_out=1,
        prompt_sha256=prompt_sha256(original),
        output_sha256=out_hash,
        price_msat=3,
    )
    metering = seal(NODE, Kind.METERING_RECORD, record, to=B.pubkey, reply_to=forwarded.id)
    terms = {
        "job_id": JOB_ID,
        "job_submit": submit.id,
        "requester": A.pubkey,
        "provider": B.pubkey,
        "input_sha256": job_hash(original, SALT),
        "output_sha256": out_hash,
        "usage": {"input_tokens": 4, "output_tokens": 1},
        "price_msat": 300,
        "status": "ok",
        "started_ms": 1,
        "finished_ms": 2,
        **(receipt_changes or {}),
    }
    receipt = seal(provider, Kind.JOB_RECEIPT, msgspec.convert(terms, Receipt), to=A.pubkey, reply_to=submit.id)
    result = seal(
        provider,
        Kind.JOB_RESULT,
        JobResult(job_id=JOB_ID, output=output, receipt=receipt),
        to=A.pubkey,
        reply_to=submit.id,
    )
    chain = InferResult(
        forwarded=forwarded,
        response=response,
        metering=metering,
        node=NODE.pubkey,
        offload=Offload(submit=submit, result=result, receipt=receipt, provider=B.pubkey, salt=salt),
    )
    return request, seal(A, Kind.INFER_RESPONSE, chain, to=CLIENT.pubkey, reply_to=request.id)


@pytest.mark.parametrize("privacy", [0, 1, 2])
def test_offloaded_chain_verifies_to_the_providers_node(privacy: int) -> None:
    chain = verify_chain(*build(privacy=privacy), A.pubkey)
    assert (chain.provider, chain.node, chain.output) == (B.pubkey, NODE.pubkey, "4")
    assert chain.receipt is not None and chain.receipt.price_msat == 300


def test_a_job_raised_to_a_higher_privacy_level_verifies() -> None:
    """The router may seal a PL0 request (ROUTER_FED_MIN_PRIVACY); that never fails the client's check."""
    chain = verify_chain(*build(privacy=2, original=REQUEST), A.pubkey)
    assert (chain.provider, chain.node, chain.output) == (B.pubkey, NODE.pubkey, "4")
    assert chain.receipt is not None and chain.receipt.price_msat == 300


@pytest.mark.parametrize(
    ("kwargs", "step"),
    [
        ({"submit_request": InferenceRequest(model="m", prompt="something else", max_tokens=16)}, "job submit"),
        ({"receipt_changes": {"requester": MALLORY.pubkey}}, "receipt"),
        ({"receipt_changes": {"input_sha256": "0" * 64}}, "receipt"),
        ({"receipt_changes": {"output_sha256": "1" * 64}}, "receipt"),
        ({"receipt_changes": {"status": "failed"}}, "receipt"),
        ({"provider": MALLORY}, "job result"),  # result and receipt signed by someone else
        ({"salt": None}, "job submit"),  # the router does not say how the job's hash was salted
        ({"salt": new_salt()}, "job submit"),  # ... or names another salt than the submit's
        ({"privacy": 1, "salt": new_salt()}, "job submit"),  # the same at PL1, where only the hash is visible
        # the client asked PL2; the router sent it at PL1
        ({"privacy": 1, "original": msgspec.structs.replace(REQUEST, privacy=2)}, "job submit"),
        ({"privacy": 0, "original": msgspec.structs.replace(REQUEST, privacy=1)}, "job submit"),
    ],
)
def test_tampered_offloads_are_caught(kwargs: dict[str, object], step: str) -> None:
    with pytest.raises(ChainError) as err:
        verify_chain(*build(**kwargs), A.pubkey)  # type: ignore[arg-type]
    assert err.value.step == step
