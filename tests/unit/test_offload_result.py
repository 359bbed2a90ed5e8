"""The requester's check of a provider's job.result before it pays or answers: signatures, bindings, the
receipt's hashes and price, and the provider's chain down to its node."""

from __future__ import annotations

import hashlib
from typing import Any

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
    Usage,
    prompt_sha256,
)
from fedai_router.federation.result_check import ResultCheck, Submitted
from fedai_router.verify import NodeFault

A, B, NODE, MALLORY = (Keys.generate() for _ in range(4))
REQUEST = InferenceRequest(model="m", prompt="offloaded", max_tokens=8)
JOB = "cd" * 16
SALT = new_salt()
CHECK = ResultCheck(A, skew_s=60, tokens_per_byte=1, tokens_overhead=1024)


def scenario(**change: Any) -> tuple[Event, JobSubmit, bytes]:
    payload = JobSubmit(
        job_id=JOB,
        award="e" * 64,
        privacy=0,
        request=job_request(REQUEST),
        salt=SALT,
        input_sha256=job_hash(REQUEST, SALT),
        max_cost_msat=500,
    )
    submit = seal(A, Kind.JOB_SUBMIT, payload, to=B.pubkey, nonce=True)
    forwarded = seal(
        B,
        Kind.INFER_REQUEST,
        msgspec.structs.replace(job_request(REQUEST), client=A.pubkey, origin=change.get("origin", submit.id)),
        to=NODE.pubkey,
        nonce=True,
    )
    output = "answer"
    tokens_in, tokens_out = change.get("usage", (2, 1))  # what the provider's node metered
    response = seal(
        NODE,
        Kind.INFER_RESPONSE,
        InferenceResponse(
            model="m",
            output=output,
            finish_reason="stop",
            usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
            latency_ms=1.0,
        ),
        to=B.pubkey,
        reply_to=forwarded.id,
    )
    digest = hashlib.sha256(output.encode()).hexdigest()
    record = MeteringRecord(
        request=forwarded.id,
        response=response.id,
        model="m",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        wall_ms=1.0,
        bytes_in=1,
        bytes_out=1,
        prompt_sha256=prompt_sha256(REQUEST),
        output_sha256=digest,
        price_msat=change.get("node_price", 1),
    )
    metering = seal(NODE, Kind.METERING_RECORD, record, to=B.pubkey, reply_to=forwarded.id)
    terms = {
        "job_id": JOB,
        "job_submit": submit.id,
        "requester": A.pubkey,
        "provider": B.pubkey,
        "input_sha256": job_hash(REQUEST, SALT),
        "output_sha256": digest,
        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        "price_msat": 100,
        "status": "ok",
        "started_ms": 1,
        "finished_ms": 2,
        **change.get("receipt", {}),
    }
    receipt = seal(
        change.get("receipt_signer", B),
        Kind.JOB_RECEIPT,
        msgspec.convert(terms, Receipt),
        to=A.pubkey,
        reply_to=submit.id,
    )
    chain = InferResult(forwarded=forwarded, response=response, metering=metering, node=NODE.pubkey)
    result = JobResult(job_id=JOB, output=change.get("output", output), receipt=receipt, chain=chain)
    return submit, payload, seal(B, Kind.JOB_RESULT, result, to=A.pubkey, reply_to=submit.id).to_json()


def test_a_genuine_result_verifies() -> None:
    submit, payload, body = scenario()
    checked = CHECK.verify(Submitted(B.pubkey, submit, payload, REQUEST, 500), body)
    assert (checked.receipt.price_msat, checked.chain.node) == (100, NODE.pubkey)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"output": "another answer"}, "output hash"),  # the text does not hash to the receipt
        ({"receipt": {"input_sha256": "0" * 64}}, "input hash"),
        ({"receipt": {"price_msat": 501}}, "price above the bid"),
        ({"receipt": {"status": "failed"}}, "status failed"),
        ({"receipt_signer": MALLORY}, "verification"),  # a receipt signed by another key
        ({"origin": "f" * 64}, "not for our job"),  # the provider's node ran something else
        # the provider's node metered more than the client agreed to (the bid is 500, max_tokens 8)
        ({"node_price": 501}, "price above what the client agreed"),
        ({"usage": (2, 9)}, "output tokens above max_tokens"),
        ({"usage": (2 + 1024 + len("offloaded"), 1)}, "input tokens above what the prompt can hold"),
        ({"receipt": {"usage": {"input_tokens": 3, "output_tokens": 1}}}, "usage is not its node's"),
    ],
)
def test_bad_results_are_refused(change: dict[str, Any], needle: str) -> None:
    submit, payload, body = scenario(**change)
    with pytest.raises(NodeFault, match=needle):
        CHECK.verify(Submitted(B.pubkey, submit, payload, REQUEST, 500), body)
