"""What the requester checks in a provider's job.result before it answers the client: signed by the provider,
for our submit; its receipt for this input and output at no more than the bid; and its chain down to its node
verified as we verify our own nodes. Pure: raises `NodeFault`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from fedai.protocol import nip44
from fedai.protocol.envelope import open_event
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.federation import PL0_PUBLIC, JobResult, JobSubmit, Receipt, SealedOutput, job_request
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    InferenceRequest,
    InferResult,
    NodeReply,
    decode_payload,
    encode_payload,
    prompt_sha256,
)
from fedai_router.verify import Binding, NodeFault, reply_limits, verify_reply

MAX_RESULT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job this router sent: to whom, the signed submit, its payload, the client's request and the bid's price."""

    peer: str
    submit: Event
    payload: JobSubmit
    request: InferenceRequest
    price: int


@dataclass(frozen=True, slots=True)
class Checked:
    """A provider's result that passed every check."""

    event: Event  # the job.result
    result: JobResult
    receipt: Receipt
    chain: InferResult  # the provider's chain down to its node


def receipt_problems(receipt: Receipt, result: JobResult, job: Submitted, requester: str, output: str) -> list[str]:
    """How a receipt differs from the job we submitted and the output we got (empty when it matches). Pure."""
    payload = job.payload
    problems = []
    if (receipt.job_id, result.job_id) != (payload.job_id, payload.job_id) or receipt.job_submit != job.submit.id:
        problems.append("job")
    if (receipt.requester, receipt.provider) != (requester, job.peer):
        problems.append("routers")
    if receipt.input_sha256 != payload.input_sha256:
        problems.append("input hash")
    if receipt.output_sha256 != hashlib.sha256(output.encode()).hexdigest():
        problems.append("output hash")
    if receipt.price_msat > job.price:
        problems.append("price above the bid")
    if receipt.status != "ok":
        problems.append(f"status {receipt.status}")
    return problems + settlement_problems(receipt, payload, job.price)


def settlement_problems(receipt: Receipt, payload: JobSubmit, paid_msat: int) -> list[str]:
    """How the provider's statement of a paid job (docs/payments.md#refunds) fails the rules the client's chain
    check applies: it names the invoice paid (`paid_msat`, the bid's price), adds up, uses the receipt's price
    and refunds only to a destination the client named. An unpaid job states none. Pure."""
    stated, payment = receipt.settlement, payload.payment
    if stated is None:
        return []
    if payment is None:
        return ["a settlement for an unpaid job"]
    problems = []
    if (stated.role, stated.payment_hash, stated.quoted_msat) != ("provider", payment.payment_hash, paid_msat):
        problems.append("settlement's invoice")
    if stated.used_msat + stated.refund_msat + stated.kept_msat != stated.quoted_msat:
        problems.append("settlement's sum")
    if stated.used_msat != min(receipt.price_msat, stated.quoted_msat):
        problems.append("settlement's use")
    if stated.refund_msat and payment.refund_to is None:
        problems.append("settlement's refund")
    return problems


@dataclass(frozen=True)
class ResultCheck:
    keys: Keys  # ours: results are addressed (and PL1/PL2 outputs sealed) to us
    skew_s: int
    tokens_per_byte: int  # ROUTER_INPUT_TOKENS_PER_BYTE
    tokens_overhead: int  # ROUTER_INPUT_TOKENS_OVERHEAD

    def verify(self, job: Submitted, body: bytes) -> Checked:
        """The provider's job.result for `job`, checked down to its node."""
        event, result, receipt = self._open(job, body)
        output, chain = self._output(job, result)
        problems = receipt_problems(receipt, result, job, self.keys.pubkey, output)
        if problems:
            raise NodeFault("provider receipt does not match: " + ", ".join(problems))
        self._verify_chain(job, chain, output, receipt)
        return Checked(event, result, receipt, chain)

    def _open(self, job: Submitted, body: bytes) -> tuple[Event, JobResult, Receipt]:
        me, signers, submit, skew = self.keys.pubkey, (job.peer,), job.submit.id, self.skew_s
        try:
            event = decode_event(body, MAX_RESULT_BYTES)
            result = open_event(
                event, JobResult, kinds=(Kind.JOB_RESULT,), recipient=me, signers=signers, reply_to=submit, skew_s=skew
            ).payload
            receipt = open_event(
                result.receipt,
                Receipt,
                kinds=(Kind.JOB_RECEIPT,),
                recipient=me,
                signers=signers,
                reply_to=submit,
                skew_s=skew,
            ).payload
        except FedaiError as err:
            raise NodeFault(f"provider result failed verification: {err.code.value}: {err.message}") from None
        return event, result, receipt

    def _output(self, job: Submitted, result: JobResult) -> tuple[str, InferResult]:
        """The output and the chain: in the clear at PL0, sealed to us at PL1/PL2."""
        if job.payload.privacy == PL0_PUBLIC:
            if result.output is None or result.chain is None:
                raise NodeFault("a PL0 result carries the output and the chain")
            return result.output, result.chain
        if result.sealed_output is None:
            raise NodeFault("a PL1/PL2 result carries its output sealed")
        sealed = decode_payload(nip44.decrypt(self.keys, job.peer, result.sealed_output), SealedOutput)
        return sealed.output, sealed.chain

    def _verify_chain(self, job: Submitted, chain: InferResult, output: str, receipt: Receipt) -> None:
        """The provider's chain: its forwarded request (for our submit, carrying exactly the job), the node's signed
        response and metering agreeing with the output and with the receipt, and within what the client agreed
        to: tokens within the job's bounds and a node price no higher than the bid (`job.price`), itself within the
        client's cap. The provider's node pricing is never announced to us, so the bid is the price bound."""
        peer, request = job.peer, job.request
        try:
            forwarded = open_event(
                chain.forwarded,
                InferenceRequest,
                kinds=(Kind.INFER_REQUEST,),
                recipient=chain.node,
                signers=(peer,),
                skew_s=self.skew_s,
            ).payload
        except FedaiError as err:
            raise NodeFault(f"provider chain: {err.code.value}: {err.message}") from None
        if forwarded.origin != job.submit.id or forwarded.client != self.keys.pubkey:
            raise NodeFault("provider chain is not for our job")
        if msgspec.structs.replace(forwarded, origin=None, client=None) != job_request(request):
            raise NodeFault("provider ran another request than the job")
        limits = reply_limits(request, job.price, tokens_per_byte=self.tokens_per_byte, overhead=self.tokens_overhead)
        binding = Binding(peer, chain.node, None, chain.forwarded, prompt_sha256(request), self.skew_s, limits)
        reply = encode_payload(NodeReply(response=chain.response, metering=chain.metering)).encode()
        record = verify_reply(reply, binding, streamed_output=output).record
        if record.output_sha256 != receipt.output_sha256:
            raise NodeFault("provider receipt's output hash is not its node's")
        if (record.input_tokens, record.output_tokens) != (receipt.usage.input_tokens, receipt.usage.output_tokens):
            raise NodeFault("provider receipt's usage is not its node's")
