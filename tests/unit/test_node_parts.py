"""The node's parts alone, without HTTP: the model catalog, admission, and the events the node signs."""

from __future__ import annotations

import time

import msgspec
import pytest
from prometheus_client import CollectorRegistry, Gauge
from starlette.requests import Request
from starlette.types import Message

from fedai.payments.refund import settle_share
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    Ack,
    InferenceRequest,
    InferenceResponse,
    MeteringRecord,
    NodeReply,
    Pricing,
    StreamChunk,
    decode_payload,
)
from fedai_node.admission import Admission
from fedai_node.catalog import LATENCY_EWMA, ModelCatalog
from fedai_node.limits import Limits
from fedai_node.reply import ReplySigner
from fedai_node.runners import RunnerSpec, make_runner
from fedai_node.runners.base import Estimate, RunnerError, RunnerModel, RunnerResult
from fedai_node.runners.mock import MockRunner
from fedai_node.serving import Admitted

ROUTER = Keys.generate()
NODE = Keys.generate()


class ProbeFails(MockRunner):
    async def estimate(self, req: InferenceRequest) -> Estimate:
        raise RunnerError("no estimate")


class NoModels(MockRunner):
    async def list_models(self) -> list[RunnerModel]:
        return []


# ---- catalog ---------------------------------------------------------------------------------------


async def test_catalog_serves_aliases_of_its_primary_model() -> None:
    catalog = ModelCatalog(MockRunner("m", 2048, delay_ms=7), "m", ("alias-a", "alias-b"))
    assert not catalog.ready
    await catalog.load()
    assert catalog.ready and catalog.primary == "m"
    assert set(catalog.models) == {"m", "alias-a", "alias-b"}
    assert [m.id for m in catalog.served()] == ["m"]
    assert catalog.latency_ms == {"m": 7.0}  # the probe's estimate


async def test_catalog_primary_falls_back_to_the_first_model_and_a_failed_probe_counts_zero() -> None:
    catalog = ModelCatalog(ProbeFails("served", 2048), "not-served")
    await catalog.load()
    assert (catalog.primary, catalog.latency_ms) == ("served", {"served": 0.0})


async def test_catalog_without_models_stays_not_ready() -> None:
    catalog = ModelCatalog(NoModels("m", 2048), None)
    with pytest.raises(RunnerError, match="serves no models"):
        await catalog.load()
    assert not catalog.ready


def test_catalog_latency_follows_requests() -> None:
    catalog = ModelCatalog(MockRunner("m", 2048), None)
    catalog.observe_latency("m", 100.0)
    assert catalog.latency_ms["m"] == 100.0  # the first sample is taken as is
    catalog.observe_latency("m", 200.0)
    assert catalog.latency_ms["m"] == pytest.approx(100.0 + LATENCY_EWMA * 100.0)


def test_runner_spec_builds_the_mock() -> None:
    runner = make_runner(RunnerSpec(name="mock", model_id=None, context_window=512, mock_delay_ms=3))
    assert isinstance(runner, MockRunner)
    assert (runner.model_id, runner.context_window, runner.delay_ms) == ("fedai-mock-1", 512, 3)
    with pytest.raises(ValueError, match="needs NODE_RUNNER_URL"):
        make_runner(RunnerSpec(name="openai"))


# ---- admission -------------------------------------------------------------------------------------


def request_with(body: bytes) -> Request:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/infer", "headers": headers}, receive)


async def admission(capacity: int = 1, *, ready: bool = True) -> Admission:
    catalog = ModelCatalog(MockRunner("m", 2048), "m")
    if ready:
        await catalog.load()
    gauge = Gauge("in_flight", "test", registry=CollectorRegistry())
    return Admission(
        pubkey=NODE.pubkey,
        routers={ROUTER.pubkey},
        max_request_bytes=65536,
        skew_s=60,
        catalog=catalog,
        limits=Limits(4096, 64, frozenset({"text-generation"})),
        capacity=capacity,
        in_flight_gauge=gauge,
    )


def infer_request(signer: Keys = ROUTER, **fields: object) -> bytes:
    req = msgspec.structs.replace(InferenceRequest(model="m", prompt="hi", max_tokens=8), **fields)
    return seal(signer, Kind.INFER_REQUEST, req, to=NODE.pubkey, nonce=True).to_json()


async def test_admission_takes_a_slot_and_claims_the_id_once() -> None:
    gate = await admission(capacity=2)
    body = infer_request()
    fields: dict[str, object] = {}
    admitted = await gate.admit(request_with(body), 1.0, fields, streaming=False)
    assert (admitted.req.model, admitted.bytes_in, admitted.started) == ("m", len(body), 1.0)
    assert fields == {"request": admitted.event.id[:12], "model": "m"}
    assert gate.in_flight.count == 1
    with pytest.raises(FedaiError) as replay:
        await gate.admit(request_with(body), 2.0, {}, streaming=False)
    assert replay.value.code is ErrorCode.REPLAY
    assert gate.in_flight.count == 1  # the refused replay gave its slot back
    gate.release()
    assert gate.in_flight.count == 0


async def test_admission_refuses_before_taking_a_slot() -> None:
    not_ready = await admission(ready=False)
    with pytest.raises(FedaiError) as starting:
        await not_ready.admit(request_with(infer_request()), 0.0, {}, streaming=False)
    assert (starting.value.code, starting.value.retry_after_ms) == (ErrorCode.NO_CAPACITY, 5000)
    gate = await admission(capacity=1)
    for body, code in [
        (infer_request(Keys.generate()), ErrorCode.FORBIDDEN),  # not a trusted router
        (infer_request(max_tokens=65), ErrorCode.INVALID_REQUEST),  # over the node's cap
        (infer_request(stream=True), ErrorCode.INVALID_REQUEST),  # belongs on /infer/stream
    ]:
        with pytest.raises(FedaiError) as refused:
            await gate.admit(request_with(body), 0.0, {}, streaming=False)
        assert refused.value.code is code
    assert gate.in_flight.count == 0
    await gate.admit(request_with(infer_request()), 0.0, {}, streaming=False)
    with pytest.raises(FedaiError) as full:
        await gate.admit(request_with(infer_request()), 0.0, {}, streaming=False)
    assert full.value.code is ErrorCode.CAPACITY_EXCEEDED


# ---- what the node signs ---------------------------------------------------------------------------


def admitted_request() -> Admitted:
    req = InferenceRequest(model="m", prompt="secret prompt", max_tokens=8)
    event = seal(ROUTER, Kind.INFER_REQUEST, req, to=NODE.pubkey, nonce=True)
    return Admitted(event, req, bytes_in=321, started=time.perf_counter())


def test_reply_is_the_signed_response_and_its_metering_record() -> None:
    admitted = admitted_request()
    signer = ReplySigner(NODE, Pricing(input_msat=1000, output_msat=2000))
    result = RunnerResult("alpha bravo", "stop", input_tokens=4, output_tokens=2)
    reply = decode_payload(signer.reply(admitted, result, latency_ms=12.34567), NodeReply)
    request_id = admitted.event.id
    response = open_event(
        reply.response,
        InferenceResponse,
        kinds={Kind.INFER_RESPONSE},
        recipient=ROUTER.pubkey,
        signers={NODE.pubkey},
        reply_to=request_id,
    ).payload
    assert (response.output, response.finish_reason, response.latency_ms) == ("alpha bravo", "stop", 12.346)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 2)
    record = open_event(
        reply.metering,
        MeteringRecord,
        kinds={Kind.METERING_RECORD},
        recipient=ROUTER.pubkey,
        signers={NODE.pubkey},
        reply_to=request_id,
    ).payload
    assert (record.response, record.bytes_in, record.price_msat) == (reply.response.id, 321, 8)


def test_a_paid_reply_charges_at_most_the_share_paid() -> None:
    # the quote priced fewer input tokens than the model's tokenizer counted: the node bills the ceiling it was paid
    admitted = admitted_request()
    signer = ReplySigner(NODE, Pricing(input_msat=1000, output_msat=2000))
    result = RunnerResult("alpha bravo", "stop", input_tokens=40, output_tokens=2)  # 44 msat at this pricing
    paid = settle_share(
        "node", "ab" * 32, quoted_msat=30, used_msat=signer.price(admitted, result), dust_msat=1, refunding=False
    )
    assert (paid.used_msat, paid.kept_msat) == (30, 0)
    record = open_event(
        decode_payload(signer.reply(admitted, result, 1.0, paid), NodeReply).metering,
        MeteringRecord,
        kinds={Kind.METERING_RECORD},
        recipient=ROUTER.pubkey,
        signers={NODE.pubkey},
        reply_to=admitted.event.id,
    ).payload
    assert (record.input_tokens, record.price_msat, record.settlement) == (40, 30, paid)
    under = settle_share("node", "cd" * 32, quoted_msat=100, used_msat=44, dust_msat=1, refunding=False)
    cheap = decode_payload(signer.reply(admitted, result, 1.0, under), NodeReply).metering
    assert decode_payload(cheap.content, MeteringRecord).price_msat == 44  # below the share: the metered price


def test_chunks_and_acks_are_bound_to_the_request() -> None:
    admitted = admitted_request()
    signer = ReplySigner(NODE, Pricing(input_msat=0, output_msat=0))
    chunk = open_event(
        signer.chunk(admitted, 3, " delta"),
        StreamChunk,
        kinds={Kind.STREAM_CHUNK},
        recipient=ROUTER.pubkey,
        signers={NODE.pubkey},
        reply_to=admitted.event.id,
    ).payload
    assert (chunk.seq, chunk.delta) == (3, " delta")
    ack = open_event(
        signer.ack(admitted.event, "cancelled"),
        Ack,
        kinds={Kind.ACK},
        recipient=ROUTER.pubkey,
        signers={NODE.pubkey},
        reply_to=admitted.event.id,
    ).payload
    assert ack.detail == "cancelled"
