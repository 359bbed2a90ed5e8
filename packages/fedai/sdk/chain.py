"""Verify the chain a router returns for `/infer` (docs/decisions.md#verifiable-chain): pure, no I/O.

client request → router answer (e-tagged to the request) → forwarded request (router-signed, `origin` =
the client's id, same payload; a paid request's `payment` becomes `forwarded_payment`: the paid payment request
and the node's own preimage) → node response (node-signed, e-tagged to the forwarded request) → node
metering (node-signed, same binding, hashes of the client's prompt and of the output, same usage).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from fedai.protocol.envelope import open_event
from fedai.protocol.errors import FedaiError, KeyFormatError
from fedai.protocol.event import Event
from fedai.protocol.federation import JobResult, JobSubmit, Receipt, job_hash, job_request
from fedai.protocol.keys import parse_pubkey
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    ForwardedPayment,
    InferenceRequest,
    InferenceResponse,
    InferResult,
    MeteringRecord,
    Offload,
    PaymentProof,
    PaymentRequest,
    Settlement,
    decode_payload,
    prompt_sha256,
)
from fedai.protocol.payment import WORK_ROLES
from fedai.sdk.errors import ChainError, InvalidRequest, Link
from fedai.sdk.settlement import check_offload_settlements, check_settlements, paid_request

__all__ = ["ChainError", "Link", "VerifiedChain", "router_key", "verify_chain"]


def router_key(value: str, what: str = "router_pubkey") -> str:
    """A public key as given (npub or hex, any case) → lowercase hex, the form events carry. Raises
    `InvalidRequest` (naming the argument, `what`) for anything that is not a public key."""
    try:
        return parse_pubkey(value)
    except (KeyFormatError, AttributeError) as err:
        message = str(err) if isinstance(err, KeyFormatError) else "a public key must be a string"
        raise InvalidRequest(f"{what}: {message}") from None


@dataclass(frozen=True)
class VerifiedChain:
    """A verified inference: the output plus every signed link that proves who ran it and how it was metered."""

    request: Event
    answer: Event
    forwarded: Event
    response: Event
    metering: Event
    router: str
    node: str
    result: InferenceResponse
    record: MeteringRecord
    provider: str | None = None  # set when the router offloaded the request to this peer router
    receipt: Receipt | None = None  # the provider's signed receipt for it
    settlements: tuple[
        Settlement, ...
    ] = ()  # a paid request: what the node (or provider) and the router kept and refunded
    provider_payment_hash: str | None = None  # a paid offload: the provider invoice's hash its receipt names

    @property
    def output(self) -> str:
        return self.result.output

    def summary(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "node": self.node,
            "model": self.result.model,
            "output": self.result.output,
            "finish_reason": self.result.finish_reason,
            "usage": msgspec.to_builtins(self.result.usage),
            "metering": msgspec.to_builtins(self.record),
            "events": {
                "request": self.request.id,
                "answer": self.answer.id,
                "forwarded": self.forwarded.id,
                "response": self.response.id,
                "metering": self.metering.id,
            },
        }


def _link(link: Link, event: Event, cls: type[Any], **rules: Any) -> Any:
    try:
        return open_event(event, cls, skew_s=None, **rules).payload
    except FedaiError as err:
        raise ChainError.wrap(link, err) from None


def verify_chain(
    request: Event,
    answer: Event,
    router_pubkey: str,
    *,
    client: str | None = None,
    original: InferenceRequest | None = None,
) -> VerifiedChain:
    """Check every signature and binding from the client's request to the node's metering record.

    `request` is the event that asked: the client's signed infer.request (then `client` and `original` come
    from it), or, for the OpenAI-compatible API, the NIP-98 authorization or the router's record of an API-key
    call, with `client` the caller's key and `original` the request the router derived from the HTTP body.
    """
    router_pubkey = router_key(router_pubkey)
    client = router_key(client, "client") if client else request.pubkey
    if original is None:
        original = decode_payload(request.content, InferenceRequest)
    chain: InferResult = _link(
        Link.ROUTER_ANSWER,
        answer,
        InferResult,
        kinds=(Kind.INFER_RESPONSE,),
        recipient=client,
        signers=(router_pubkey,),
        reply_to=request.id,
    )
    if chain.offload is not None:
        return _verify_offloaded(request, answer, router_pubkey, client, original, chain, chain.offload)
    response, record = _node_chain(chain, router_pubkey, request.id, client, original, original)
    paid = _paid_request(chain.forwarded, original.payment)
    settlements = check_settlements(original.payment, paid, record, chain.settlement, router_pubkey)
    return VerifiedChain(
        request=request,
        answer=answer,
        forwarded=chain.forwarded,
        response=chain.response,
        metering=chain.metering,
        router=router_pubkey,
        node=chain.node,
        result=response,
        record=record,
        settlements=settlements,
    )


def _paid_request(forwarded: Event, proof: PaymentProof | None) -> PaymentRequest | None:
    """The payment request a paid request was forwarded with (its links already checked by `_node_chain`)."""
    if proof is None:
        return None
    carried = decode_payload(forwarded.content, InferenceRequest).forwarded_payment
    return None if carried is None else paid_request(carried.request.content)


def _node_chain(
    chain: InferResult, forwarder: str, origin: str, client: str, expected: InferenceRequest, original: InferenceRequest
) -> tuple[InferenceResponse, MeteringRecord]:
    """forwarded (by `forwarder`, for `origin`/`client`, carrying `expected`) → node response → node metering."""
    node = chain.node
    forwarded: InferenceRequest = _link(
        Link.FORWARDED,
        chain.forwarded,
        InferenceRequest,
        kinds=(Kind.INFER_REQUEST,),
        recipient=node,
        signers=(forwarder,),
    )
    if forwarded.origin != origin or forwarded.client != client:
        raise ChainError(Link.FORWARDED, "origin/client do not point at this request")
    sent = msgspec.structs.replace(forwarded, origin=None, client=None, forwarded_payment=None)
    if sent != msgspec.structs.replace(expected, payment=None):
        raise ChainError(Link.FORWARDED, "the router changed the request it forwarded")
    _check_forwarded_payment(forwarded.forwarded_payment, expected.payment, forwarder, node, chain.forwarded.created_at)
    response: InferenceResponse = _link(
        Link.RESPONSE,
        chain.response,
        InferenceResponse,
        kinds=(Kind.INFER_RESPONSE,),
        recipient=forwarder,
        signers=(node,),
        reply_to=chain.forwarded.id,
    )
    record: MeteringRecord = _link(
        Link.METERING,
        chain.metering,
        MeteringRecord,
        kinds=(Kind.METERING_RECORD,),
        recipient=forwarder,
        signers=(node,),
        reply_to=chain.forwarded.id,
    )
    if record.request != chain.forwarded.id or record.response != chain.response.id:
        raise ChainError(Link.METERING, "not bound to the forwarded request and its response")
    if record.prompt_sha256 != prompt_sha256(original):
        raise ChainError(Link.METERING, "prompt hash is not the hash of this request's prompt")
    if record.output_sha256 != hashlib.sha256(response.output.encode()).hexdigest():
        raise ChainError(Link.METERING, "output hash does not match the output")
    if (record.input_tokens, record.output_tokens) != (response.usage.input_tokens, response.usage.output_tokens):
        raise ChainError(Link.METERING, "token counts differ from the response's usage")
    return response, record


def _check_forwarded_payment(
    forwarded: ForwardedPayment | None, proof: PaymentProof | None, router: str, node: str, forwarded_at: int
) -> None:
    """A paid request reaches its node with `forwarded_payment` in place of `payment`: the payment request the
    client paid (signed by the router) and, of the client's preimages, the node's own only. An unpaid request
    carries none. The payment request must not have expired when the router forwarded it (`forwarded_at`): a
    chain verified later, from the archive, still verifies."""
    if proof is None:
        if forwarded is not None:
            raise ChainError(Link.FORWARDED, "the router forwarded a payment the client did not make")
        return
    if forwarded is None or forwarded.request.id != proof.payment_request:
        raise ChainError(Link.FORWARDED, "the node was not forwarded the payment request the client paid")
    if forwarded.refund_to != proof.refund_to:
        raise ChainError(Link.FORWARDED, "the node was not forwarded the refund destination the client named")
    request: PaymentRequest = _link(
        Link.FORWARDED,
        forwarded.request,
        PaymentRequest,
        kinds=(Kind.PAYMENT_REQUEST,),
        signers=(router,),
        now=forwarded_at,
    )
    entry = next((p for p in request.payees if p.role in WORK_ROLES and p.payee == node), None)
    if entry is None or proof.preimages.get(entry.payment_hash) != forwarded.preimage:
        raise ChainError(Link.FORWARDED, "the payment forwarded is not the node's own share of the client's proof")


def _verify_offloaded(
    request: Event,
    answer: Event,
    router: str,
    client: str,
    original: InferenceRequest,
    chain: InferResult,
    off: Offload,
) -> VerifiedChain:
    """The router offloaded the request: its job.submit must carry exactly this request (by its salted hash at
    PL1/PL2) at no lower privacy level than the client asked for, the provider's result and receipt must answer
    that submit, and the provider's chain must reach its node."""
    provider = off.provider
    submit: JobSubmit = _link(
        Link.OFFLOAD_SUBMIT, off.submit, JobSubmit, kinds=(Kind.JOB_SUBMIT,), recipient=provider, signers=(router,)
    )
    expected = job_request(original)
    if off.salt is None:
        raise ChainError(Link.OFFLOAD_SUBMIT, "the answer does not give the salt of the job's hash")
    sent = submit.request
    if submit.input_sha256 != job_hash(original, off.salt) or (sent is not None and sent != expected):
        raise ChainError(Link.OFFLOAD_SUBMIT, "the job sent to the provider is not this request")
    if submit.privacy < original.privacy:
        raise ChainError(Link.OFFLOAD_SUBMIT, "the job left at a lower privacy level than the request asked for")
    result: JobResult = _link(
        Link.OFFLOAD_RESULT,
        off.result,
        JobResult,
        kinds=(Kind.JOB_RESULT,),
        recipient=router,
        signers=(provider,),
        reply_to=off.submit.id,
    )
    receipt: Receipt = _link(
        Link.OFFLOAD_RECEIPT,
        off.receipt,
        Receipt,
        kinds=(Kind.JOB_RECEIPT,),
        recipient=router,
        signers=(provider,),
        reply_to=off.submit.id,
    )
    if result.receipt.id != off.receipt.id or {result.job_id, receipt.job_id} != {submit.job_id}:
        raise ChainError(Link.OFFLOAD_RECEIPT, "result, receipt and job do not belong together")
    if (receipt.requester, receipt.provider, receipt.job_submit) != (router, provider, off.submit.id):
        raise ChainError(Link.OFFLOAD_RECEIPT, "receipt names other routers or another job")
    if receipt.input_sha256 != submit.input_sha256 or receipt.status != "ok":
        raise ChainError(Link.OFFLOAD_RECEIPT, "receipt is not for this input, or not a success")
    paid_hash = check_offload_payment(submit, receipt, original.payment, off, router, off.submit.created_at)
    response, record = _node_chain(chain, provider, off.submit.id, router, expected, original)
    if receipt.output_sha256 != record.output_sha256:
        raise ChainError(Link.OFFLOAD_RECEIPT, "receipt's output hash is not the node's")
    paid = None if paid_hash is None or off.payment_request is None else paid_request(off.payment_request.content)
    settlements = check_offload_settlements(original.payment, paid, receipt, chain.settlement, router, provider)
    return VerifiedChain(
        request=request,
        answer=answer,
        forwarded=chain.forwarded,
        response=chain.response,
        metering=chain.metering,
        router=router,
        node=chain.node,
        result=response,
        record=record,
        provider=provider,
        receipt=receipt,
        settlements=settlements,
        provider_payment_hash=paid_hash,
    )


def check_offload_payment(
    submit: JobSubmit, receipt: Receipt, proof: PaymentProof | None, off: Offload, router: str, submitted_at: int
) -> str | None:
    """A paid offloaded request (docs/payments.md#federation-settlement): the answer carries the payment request the
    client paid (signed by the router, unexpired when the job was submitted), whose `provider` entry is the
    provider's own invoice; the router submitted the job with the client's preimage of that invoice, and the
    provider's signed receipt names its payment hash (the provider says it was paid by the invoice the client
    paid), with the refund destination the client named in its proof (or none, as the client named none). An
    unpaid request carries no payment anywhere. Returns the payment hash the receipt names. Pure."""
    sent = submit.payment
    if proof is None:
        if sent is not None or receipt.payment_hash is not None or off.payment_request is not None:
            raise ChainError(Link.OFFLOAD_SUBMIT, "the router sent the provider a payment the client did not make")
        return None
    if off.payment_request is None or off.payment_request.id != proof.payment_request:
        raise ChainError(Link.OFFLOAD_SUBMIT, "the answer does not carry the payment request the client paid")
    request: PaymentRequest = _link(
        Link.OFFLOAD_SUBMIT,
        off.payment_request,
        PaymentRequest,
        kinds=(Kind.PAYMENT_REQUEST,),
        signers=(router,),
        now=submitted_at,
    )
    entry = next((p for p in request.payees if p.role == "provider" and p.payee == off.provider), None)
    if entry is None:
        raise ChainError(Link.OFFLOAD_SUBMIT, "the payment request the client paid lists no invoice of the provider")
    if (
        sent is None
        or sent.payment_hash != entry.payment_hash
        or proof.preimages.get(entry.payment_hash) != sent.preimage
    ):
        raise ChainError(Link.OFFLOAD_SUBMIT, "the provider was not sent the client's payment of its own invoice")
    if sent.refund_to != proof.refund_to:
        raise ChainError(Link.OFFLOAD_SUBMIT, "the provider was not sent the refund destination the client named")
    if receipt.payment_hash != entry.payment_hash:
        raise ChainError(Link.OFFLOAD_RECEIPT, "the provider's receipt does not name the payment hash the client paid")
    return entry.payment_hash
