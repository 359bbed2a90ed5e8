"""Typed payloads carried as the `content` of envelopes (docs/decisions.md#one-envelope).

snake_case; extend, don't rename. One file for now, over 400 lines: every payload of every hop, so the wire
format reads in one place. Its natural seams are the payment payloads (pay.request, payment.request, invoices,
proofs, settlements) and the manifest payloads; moving the payment ones into `fedai.protocol.payment` would make
an import cycle (it checks these types), so a split means a new `payment_messages` module both import.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, Hex64
from fedai.protocol.jsonguard import check_json

# Integer bounds are what storage holds (docs/protocol.md, "Payload bounds"): a value out of range is a typed
# `invalid_event` when the payload is decoded, never a failed database write after a node did the work.
INT4_MAX = 2**31 - 1  # Postgres `integer`: token counts (metering_records, quotes)
INT8_MAX = 2**63 - 1  # Postgres `bigint`: msat amounts, byte counts
MAX_RATE_MSAT = 10**12  # msat per 1k tokens: a rate times any INT4 token count stays far inside INT8
MAX_UNIX_MS = 2**53  # timestamps and deadlines in ms: exact in a JSON double

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)]
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)]
Msat = Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)]
Rate = Annotated[int, msgspec.Meta(ge=0, le=MAX_RATE_MSAT)]  # msat per 1k tokens

DEFAULT_JOB_TYPE = "text-generation"


class Payload(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base for every payload: compact JSON, unknown fields ignored so peers can extend."""


class ChatMessage(Payload, kw_only=True):
    role: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    content: str


class Usage(Payload, kw_only=True):
    input_tokens: Count
    output_tokens: Count


# --- payments (docs/payments.md#protocol-and-claims): every payee invoices from its own wallet ---

MAX_BOLT11_CHARS = 4096  # a BOLT-11 string, lowercase bech32; decoding and its own checks: fedai.payments
MAX_PAYEES = 4  # a node (or a provider router) and the router's fee; room for later roles
PayeeRole = Literal["node", "router_fee", "provider"]
Bolt11 = Annotated[str, msgspec.Meta(min_length=8, max_length=MAX_BOLT11_CHARS, pattern=r"^ln[0-9a-z]+\Z")]
PaidMsat = Annotated[int, msgspec.Meta(ge=1, le=INT8_MAX)]  # an invoice asks for at least 1 msat
UnixS = Annotated[int, msgspec.Meta(ge=0, le=MAX_UNIX_MS)]
Preimages = Annotated[dict[Hex64, Hex64], msgspec.Meta(min_length=1, max_length=MAX_PAYEES)]
RefundTo = Annotated[str, msgspec.Meta(min_length=3, max_length=2048)]  # fedai.payments.refund.parse_destination


class PayeeInvoice(Payload, kw_only=True):
    """Content of a payment.invoice (kind 21045), signed by the payee: its own invoice, bound to one quote,
    client and router. The signer is the payee."""

    role: PayeeRole
    quote: Name
    client: Hex64
    router: Hex64
    amount_msat: PaidMsat
    payment_hash: Hex64
    bolt11: Bolt11
    expires_at: UnixS
    award: Hex64 | None = None  # a provider router's invoice: the award it is for (docs/federation.md#settlement)


class Payee(Payload, kw_only=True):
    """One entry of a payment request: who is paid, how much, and the payee's own signed invoice."""

    role: PayeeRole
    payee: Hex64
    amount_msat: PaidMsat
    bolt11: Bolt11
    payment_hash: Hex64
    invoice: Event  # the payee's payment.invoice (21045)


class PaymentRequest(Payload, kw_only=True):
    """Content of a payment.request (kind 21036, router-signed, `p` = the client): what paying a quote means."""

    quote: Name  # the quote's `quote_id`
    client: Hex64
    router: Hex64
    expires_at: UnixS  # proofs are honoured until then
    total_msat: Msat
    payees: Annotated[list[Payee], msgspec.Meta(min_length=1, max_length=MAX_PAYEES)]


class PaymentProof(Payload, kw_only=True):
    """`InferenceRequest.payment`: the payment request paid and a preimage per payment hash."""

    payment_request: Hex64  # the payment.request event id
    preimages: Preimages  # payment_hash → preimage, sha256(preimage) = payment_hash
    refund_to: RefundTo | None = None  # where payees refund the unused part (docs/payments.md#refunds)


class ForwardedPayment(Payload, kw_only=True):
    """`InferenceRequest.forwarded_payment`, router → node (or provider): the router-signed payment request and
    the preimage of the recipient's own invoice only."""

    request: Event  # the payment.request (21036)
    preimage: Hex64
    refund_to: RefundTo | None = None  # the client's, as it signed it in `payment`


class Settlement(Payload, kw_only=True):
    """A payee's signed statement of what it did with its share (docs/payments.md#refunds): in the node's
    metering record for its work, in the router's infer.response for its fee. `used + refund + kept = quoted`;
    `refund_msat` is owed to the client's `refund_to` (paid after the answer, retried), `kept_msat` is dust
    below the payee's threshold, or everything unused when the client named no destination."""

    role: PayeeRole
    payment_hash: Hex64
    quoted_msat: Msat
    used_msat: Msat
    refund_msat: Msat
    kept_msat: Msat


class InvoiceRequest(Payload, kw_only=True):
    """Content of an invoice.request (kind 21046), router → node `POST /invoice`: invoice this share of a quote
    from your own wallet. The node answers with its payment.invoice (21045); the same binding, the same invoice."""

    quote: Name
    client: Hex64
    router: Hex64
    amount_msat: PaidMsat
    expires_at: UnixS  # the payment request's expiry: the invoice must not outlive it
    award: Hex64 | None = None  # to a provider router `POST /federation/invoice`: the award to invoice


class PayRequest(Payload, kw_only=True):
    """Content of a pay.request (kind 21047), client → router `POST /pay`: the payment request of a quote."""

    quote_id: Name


class InferenceRequest(Payload, kw_only=True):
    model: Name
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    stop: list[str] | None = None
    job_type: Name | None = None
    stream: bool = False
    quote_id: Name | None = None
    max_price_msat: Msat | None = None
    payment: PaymentProof | None = None  # client → router: what was paid (docs/payments.md)
    privacy: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0  # federation: how far the job may travel (0-3)
    nodes: Annotated[list[Hex64], msgspec.Meta(max_length=64)] | None = None  # pin: only these nodes
    exclude_nodes: Annotated[list[Hex64], msgspec.Meta(max_length=256)] | None = None
    # added by the router when it forwards the request to a node
    client: Hex64 | None = None
    origin: Hex64 | None = None
    forwarded_payment: ForwardedPayment | None = None  # router → node: in place of the client's `payment`

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of `prompt` or `messages` is required")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")


class InferenceResponse(Payload, kw_only=True):
    model: Name
    output: str
    finish_reason: str
    usage: Usage
    latency_ms: Annotated[float, msgspec.Meta(ge=0)]


class MeteringRecord(Payload, kw_only=True):
    request: Hex64  # the infer.request id the node served
    response: Hex64 | None = None  # the infer.response event that carried the output
    model: Name
    input_tokens: Count
    output_tokens: Count
    wall_ms: Annotated[float, msgspec.Meta(ge=0)]
    bytes_in: ByteCount
    bytes_out: ByteCount
    prompt_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
    output_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")] | None = None
    price_msat: Msat
    settlement: Settlement | None = None  # a paid request: what the node keeps and refunds of its share


class Pricing(Payload, kw_only=True):
    unit: str = "msat_per_1k_tokens"
    input_msat: Rate
    output_msat: Rate


class ModelInfo(Payload, kw_only=True):
    id: Name
    context_window: Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]
    pricing: Pricing
    job_types: list[Name] = msgspec.field(default_factory=lambda: [DEFAULT_JOB_TYPE])
    latency_estimate_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    aliases: Annotated[list[Name], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)


class Capacity(Payload, kw_only=True):
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]
    in_flight: Count = 0


class NodeDescriptor(Payload, kw_only=True):
    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    models: Annotated[list[ModelInfo], msgspec.Meta(min_length=1, max_length=256)]
    capacity: Capacity
    region: str = ""
    software_version: str = ""
    # the node is leaving (SIGTERM, `fedai node drain`): routers stop sending it requests at once; sent only
    # when true, so a router that predates it ignores it (docs/protocol.md#draining)
    draining: bool = False

    def model(self, model_id: str) -> ModelInfo | None:
        for m in self.models:
            if m.id == model_id:
                return m
        return None


class QuoteRequest(Payload, kw_only=True):
    model: Name
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    input_tokens: Count | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    job_type: Name | None = None
    # the rest of the job, as the request will carry it: a quote a peer router serves is for this exact job
    # (docs/payments.md#federation-settlement); a quote of a local node ignores them
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    stop: list[str] | None = None
    privacy: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0

    def __post_init__(self) -> None:
        if self.prompt is None and self.messages is None and self.input_tokens is None:
            raise ValueError("one of `prompt`, `messages` or `input_tokens` is required")


class PriceBreakdown(Payload, kw_only=True):
    input_msat: Msat
    output_msat: Msat
    router_fee_msat: Msat
    total_msat: Msat


class QuoteResponse(Payload, kw_only=True):
    """A signed price. Exactly one of `node` (a node of this router does the work) and `provider` (a peer router
    won the job's auction: docs/payments.md#federation-settlement) is set; for a provider the work's share
    (`input_msat + output_msat`) is its bid, all in `output_msat`."""

    quote_id: Name
    model: Name
    node: Hex64 | None = None
    input_tokens: Count
    max_output_tokens: Count
    price: PriceBreakdown
    expires_at: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    provider: Hex64 | None = None

    def __post_init__(self) -> None:
        if (self.node is None) == (self.provider is None):
            raise ValueError("a quote names exactly one of `node` or `provider`")

    @property
    def payee(self) -> str:
        """Whom the work is paid to: the node, or the provider router."""
        payee = self.node or self.provider
        assert payee is not None
        return payee


class Ack(Payload, kw_only=True):
    status: str = "ok"
    detail: str = ""


class NodeReply(Payload, kw_only=True):
    """A node's HTTP answer to `/infer`: two node-signed events, never a second envelope format."""

    response: Event
    metering: Event


class StreamChunk(Payload, kw_only=True):
    """One piece of a streamed answer (kind 21040), e-tagged to the request it answers. `seq` counts from 0."""

    seq: Count
    delta: str


class InferCancel(Payload, kw_only=True):
    """Router → node (kind 21043): stop generating for `request`; the stream then ends with metering for what
    was produced (finish_reason `cancelled`)."""

    request: Hex64
    reason: str = "client_disconnected"


class Offload(Payload, kw_only=True):
    """How an offloaded request was served: the job this router submitted to a peer, the peer's signed result
    and receipt. The chain beside it is then the peer's, down to the peer's node."""

    submit: Event  # job.submit (21038), signed by this router
    result: Event  # job.result (21039), signed by the provider
    receipt: Event  # job.receipt (21044), signed by the provider
    provider: Hex64
    salt: Hex64 | None = None  # the secret salt of the job's hash (`fedai.protocol.federation.job_hash`)
    payment_request: Event | None = None  # a paid offload: the payment request the client paid (role `provider`)


class InferResult(Payload, kw_only=True):
    """Content of the router's infer.response: the whole chain the client can check.

    Why: docs/decisions.md#verifiable-chain.
    """

    forwarded: Event
    response: Event
    metering: Event
    node: Hex64
    offload: Offload | None = None
    settlement: Settlement | None = None  # a paid request: what the router keeps and refunds of its fee


T = TypeVar("T", bound=Payload)


@cache
def _decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(cls)


_encoder = msgspec.json.Encoder()


def encode_payload(payload: Payload) -> str:
    return _encoder.encode(payload).decode()


def decode_payload(content: str | bytes, cls: type[T]) -> T:
    """Decode and validate a payload; schema failures (and nesting past the depth bound, or a NUL character)
    become `invalid_event`."""
    check_json(content, ErrorCode.INVALID_EVENT, f"{cls.__name__} content")
    try:
        result: T = _decoder(cls).decode(content)
        return result
    except msgspec.ValidationError as exc:
        raise FedaiError(ErrorCode.INVALID_EVENT, f"invalid {cls.__name__}: {exc}") from None
    except (msgspec.DecodeError, UnicodeError):  # msgspec raises UnicodeError for invalid UTF-8 / surrogates
        raise FedaiError(ErrorCode.INVALID_EVENT, f"{cls.__name__} content is not valid JSON") from None


def to_builtins(payload: Payload) -> Any:
    return msgspec.to_builtins(payload)


def prompt_material(req: InferenceRequest | QuoteRequest) -> bytes:
    """The exact bytes metered as "the prompt": the UTF-8 prompt, or the compact JSON of `messages`."""
    if req.prompt is not None:
        return req.prompt.encode()
    if req.messages is not None:
        return _encoder.encode(req.messages)
    return b""


def prompt_sha256(req: InferenceRequest) -> str:
    return hashlib.sha256(prompt_material(req)).hexdigest()


def estimate_tokens(text_bytes: int) -> int:
    """Coarse token estimate used for quotes and limits when no tokenizer is at hand: 4 bytes a token."""
    return max(1, math.ceil(text_bytes / 4)) if text_bytes else 0


def price_msat(pricing: Pricing, input_tokens: int, output_tokens: int) -> int:
    """Price of a request under a node's pricing, rounded up to a whole msat. Pure."""
    return -(-(input_tokens * pricing.input_msat + output_tokens * pricing.output_msat) // 1000)  # exact int ceil


# --- node manifests (docs/manifests.md): coarse hardware bands, a short benchmark, what the node can run ---

Band = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9 <>+._/-]+\Z")]
Score = Annotated[float, msgspec.Meta(ge=0, le=1e12)]


class HardwareProfile(Payload, kw_only=True):
    """Coarse bands only: never serial numbers, hostnames, MAC addresses or exact sizes."""

    os: Band
    arch: Band
    cpu: Band  # vendor + family, e.g. "AMD EPYC", "Intel Xeon", "ARM"
    cores: Band  # logical cores usable by this process
    ram: Band
    disk_free: Band  # free space where the node keeps its data
    gpu: Band = "none"  # vendor, e.g. "NVIDIA"
    gpu_count: Band = "0"
    vram: Band = "none"  # the largest single GPU
    vram_total: Band = "none"


class BenchScores(Payload, kw_only=True):
    """A short deterministic benchmark: fixed work, measured time. Bands are recomputed by whoever reads it."""

    sha256_ops_s: Score  # single-thread sha256 chain over 32-byte digests
    memcpy_mib_s: Score  # copy bandwidth of a fixed buffer
    stride_mib_s: Score  # strided (one byte per cache line) scan bandwidth
    cpu_band: Band
    memory_band: Band
    gpu_tflops: Score | None = None  # only when a GPU was actually exercised (torch + CUDA)
    gpu_band: Band | None = None
    quick: bool = False
    duration_ms: Annotated[float, msgspec.Meta(ge=0)]


class NodeManifest(Payload, kw_only=True):
    """Content of a node.manifest event (kind 31024, `d` = fedai-manifest). The subject is the signer."""

    profile: HardwareProfile
    bench: BenchScores | None = None
    recommended: Annotated[list[Name], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    software_version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    created_at: Annotated[int, msgspec.Meta(ge=0, le=2**53)]  # when profile and bench were measured
