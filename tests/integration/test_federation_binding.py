"""Jobs bound to what was bid (issue 9, part 3), between real routers on a real relay.

A provider bids on what an RFB declares; the job submitted against the award must be that job: a requester
that wins with a bid for a 1-token job cannot then run a large one. What relays carry is a salted hash: a
relay reader cannot confirm a guessed prompt from it. Jobs leave at PL1 at least by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from fedai.protocol.event import Event
from fedai.protocol.federation import JobSubmit, Rfb, job_hash, job_request, new_salt
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferResult,
    decode_payload,
    estimate_tokens,
    prompt_material,
)
from fedai.sdk import AsyncClient
from tests.support.database import extra_database
from tests.support.federation import MODEL, Duo, duo, post_job, submit_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def b_database(database_url: str) -> AsyncIterator[str]:
    async with extra_database(database_url, "binding_b") as dsn:
        yield dsn


@pytest.fixture
async def pair(database_url: str, db_pool: asyncpg.Pool, b_database: str) -> AsyncIterator[Duo]:
    async with duo(database_url, db_pool, b_database, a_options={"auction_ttl_ms": 2500}) as d:
        yield d


def rfb_for(request: InferenceRequest, salt: str, **declared: int) -> Rfb:
    """The RFB `offload` would publish for `request`, with any size declared otherwise (a lying requester)."""
    sizes = {"input_tokens": estimate_tokens(len(prompt_material(request))), "max_tokens": request.max_tokens}
    sizes.update(declared)
    return Rfb(
        job_type="text-generation",
        model=request.model,
        privacy=0,
        max_price_msat=100_000,
        job_hash=job_hash(request, salt),
        deadline_ms=int(time.time() * 1000) + 60_000,
        **sizes,
    )


SMALL = InferenceRequest(model=MODEL, prompt="hi", max_tokens=3)  # the fake node reports 3 output tokens
LARGE = InferenceRequest(model=MODEL, prompt="x" * 8_000, max_tokens=1_000)  # fits the node, not the bid


async def test_a_submit_larger_than_its_bid_is_refused_and_nothing_runs(pair: Duo) -> None:
    a, b = pair.a, pair.b
    # 1. the RFB declares a 1-token job but hashes the large one: the hash matches, the sizes do not
    lying_salt = new_salt()
    lying = await pair.auctioneer.auction(
        rfb_for(LARGE, lying_salt, input_tokens=1, max_tokens=1), ttl_s=3.0, expect={b.pubkey}
    )
    assert lying is not None and await pair.bidder.wait_accepted(lying.job_id, 5)
    refused = await post_job(b, submit_for(lying, a.keys, LARGE, lying_salt))
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (403, "forbidden")
    assert "input size" in error["message"] and "max_tokens" in error["message"]

    # 2. an honest RFB for the small job; the large job (or the small one on another model) is submitted instead
    salt = new_salt()
    honest = await pair.auctioneer.auction(rfb_for(SMALL, salt), ttl_s=3.0, expect={b.pubkey})
    assert honest is not None and await pair.bidder.wait_accepted(honest.job_id, 5)
    other_model = msgspec.structs.replace(SMALL, model="another-model")
    for job, needle in ((LARGE, "job hash"), (other_model, "model")):
        resp = await post_job(b, submit_for(honest, a.keys, job, salt))
        assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden")
        assert needle in resp.json()["error"]["message"]

    # nothing ran, nothing was written, and a refused submit did not use the award up
    assert pair.node.calls == 0
    rows = await b.service.pool.fetch("SELECT status FROM federation_jobs")
    assert [r["status"] for r in rows] == ["awarded", "awarded"]
    assert await b.service.pool.fetchval("SELECT count(*) FROM metering_records") == 0
    ok = await post_job(b, submit_for(honest, a.keys, SMALL, salt))
    assert ok.status_code == 200, ok.text
    assert pair.node.calls == 1


async def rfbs_seen(pair: Duo) -> tuple[list[Event], asyncio.Event]:
    spy = await pair.scripted()
    seen: list[Event] = []
    got = asyncio.Event()

    async def note(event: Event) -> None:
        seen.append(event)
        got.set()

    await spy.on([int(Kind.RFB)], note)
    return seen, got


async def test_a_relay_reader_cannot_confirm_a_guessed_prompt_and_jobs_leave_sealed(pair: Duo) -> None:
    seen, got = await rfbs_seen(pair)
    async with AsyncClient(pair.a.url, router_pubkey=pair.a.pubkey) as client:
        chain = await client.infer(MODEL, "a prompt someone could guess", max_tokens=8)  # privacy not given: 0
    await asyncio.wait_for(got.wait(), 5)
    [rfb_event] = seen
    rfb = decode_payload(rfb_event.content, Rfb)
    asked = decode_payload(chain.request.content, InferenceRequest)
    assert asked.privacy == 0
    # what today's relays carry for a guess: the sha256 of the job's canonical JSON
    guessed = hashlib.sha256(msgspec.json.encode(job_request(asked))).hexdigest()
    assert rfb.job_hash != guessed and guessed not in rfb_event.to_json().decode()

    # the job left at ROUTER_FED_MIN_PRIVACY (1): sealed with its salt, nothing in clear to confirm a guess with
    offload = decode_payload(chain.answer.content, InferResult).offload
    assert offload is not None and offload.salt is not None
    submit = decode_payload(offload.submit.content, JobSubmit)
    assert (rfb.privacy, submit.privacy) == (1, 1)
    assert submit.request is None and submit.salt is None and submit.sealed is not None
    assert guessed not in offload.submit.to_json().decode()
    # the salted hash binds the submit to the RFB, and the client (given the salt) recomputes it
    assert submit.input_sha256 == rfb.job_hash == job_hash(asked, offload.salt)
    assert chain.provider == pair.b.pubkey and chain.receipt is not None
    assert chain.receipt.input_sha256 == rfb.job_hash
