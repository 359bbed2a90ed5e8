"""Payloads of router-to-router federation (kinds in docs/decisions.md#kinds; flow in docs/federation.md).

On relays (signed, verified by every receiver): `RouterCaps` (31020, d=`caps`), `RouterPrice` (31021, d = job
type), `RouterStatus` (31022, d=`status`) as addressable announcements; `Rfb` (21020), `Bid` (21021), `Award`
(21022), `Cancel` (21023) as ephemeral auction messages with an `expiration` tag. Over HTTP, directly to the
winner: `JobSubmit` (21038) → `JobResult` (21039) carrying a provider-signed `Receipt` (21044).
A relay never sees a prompt or an output: RFBs carry sizes and a salted hash only (`job_hash`: HMAC-SHA256 of
the job under a random per-auction salt that only the two routers and the client learn), so a relay reader
cannot confirm a guessed prompt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Literal

import msgspec

from fedai.protocol.event import Event, Hex64
from fedai.protocol.messages import (
    INT4_MAX,
    MAX_UNIX_MS,
    Count,
    InferenceRequest,
    InferResult,
    Msat,
    Name,
    Payload,
    Rate,
    RefundTo,
    Settlement,
    Usage,
)

PrivacyLevel = Annotated[int, msgspec.Meta(ge=0, le=3)]
UnixMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_UNIX_MS)]  # a time or a duration in ms
Size = Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]
Backpressure = Literal["NORMAL", "BUSY", "SATURATED"]

CAPS_D = "caps"
STATUS_D = "status"

# Privacy levels: what may leave the router, and how.
PL0_PUBLIC = 0  # the job travels as plaintext JSON over HTTP(S) to the provider
PL1_MINIMISED = 1  # client identity stripped, payload NIP-44 encrypted to the provider
PL2_ENCRYPTED = 2  # full payload and output NIP-44 encrypted end to end between the two routers
PL3_LOCAL = 3  # never offloaded


MAX_TOKENS = 1_000_000  # as `InferenceRequest.max_tokens`


class RouterLimits(Payload, kw_only=True):
    max_tokens: Size
    max_request_bytes: Size


class RouterCaps(Payload, kw_only=True):
    """What a router offers peers (31020, d=`caps`)."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]  # base URL serving /federation/job
    job_types: Annotated[list[Name], msgspec.Meta(max_length=64)]
    models: Annotated[list[Name], msgspec.Meta(max_length=1024)]
    limits: RouterLimits
    max_privacy: PrivacyLevel
    settlement: list[Name] = msgspec.field(default_factory=lambda: ["none"])
    software_version: str = ""


class ModelPrice(Payload, kw_only=True):
    model: Name
    input_msat: Rate  # per 1k tokens
    output_msat: Rate


class Sla(Payload, kw_only=True):
    p95_latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    availability: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.99


class RouterPrice(Payload, kw_only=True):
    """A price sheet for one job type (31021, d = the job type). Prices include the router's fee; `surge` ≥ 1
    multiplies them under load."""

    job_type: Name
    unit: str = "msat_per_1k_tokens"
    base_msat: Msat = 0
    surge: Annotated[float, msgspec.Meta(ge=1, le=100)] = 1.0
    models: Annotated[list[ModelPrice], msgspec.Meta(max_length=1024)]
    sla: Sla


class RouterStatus(Payload, kw_only=True):
    """Load right now (31022, d=`status`), re-published when `backpressure` changes and on an interval."""

    backpressure: Backpressure
    queue_depth: Count
    active_jobs: Count
    p95_latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    nodes: Count


class Rfb(Payload, kw_only=True):
    """Request for bids (21020): sizes and a salted hash, never the prompt. A provider's bid is for exactly this:
    the job submitted against its award must have this model, job type and privacy level, at most these sizes,
    and hash to `job_hash` under the salt the submit carries."""

    job_type: Name
    model: Name
    privacy: PrivacyLevel
    input_tokens: Count  # estimate_tokens of the prompt
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)]
    max_price_msat: Msat
    job_hash: Hex64  # job_hash(job, salt): HMAC-SHA256 of the job's canonical JSON under a secret salt
    deadline_ms: UnixMs  # unix ms by which the job must be done


class Bid(Payload, kw_only=True):
    """A peer's offer (21021), e-tagged to the RFB and addressed to its requester."""

    rfb: Hex64
    price_msat: Msat  # the most the job will cost, fee included
    eta_ms: UnixMs
    capacity_token: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]  # what the bidder reserved for it


class Award(Payload, kw_only=True):
    """The requester's choice (21022), addressed to the winner, e-tagged to the winning bid."""

    rfb: Hex64
    bid: Hex64
    job_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    price_msat: Msat
    capacity_token: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]


class Cancel(Payload, kw_only=True):
    """Withdraw an RFB (21023)."""

    rfb: Hex64
    reason: str = ""


class SealedJob(Payload, kw_only=True):
    """What `JobSubmit.sealed` decrypts to at PL1/PL2: the job and the salt of its hash."""

    request: InferenceRequest
    salt: Hex64


SETTLEMENT_LIGHTNING = "lightning"  # RouterCaps.settlement: jobs paid by a Lightning invoice of the provider
SETTLEMENT_NONE = "none"  # jobs taken unpaid


class JobPayment(Payload, kw_only=True):
    """`JobSubmit.payment`: the provider's own invoice for this award (asked with `POST /federation/invoice`)
    is paid; the preimage proves it (sha256(preimage) = payment_hash). `refund_to` is the client's, exactly as
    it signed it in its proof: the client's chain check refuses a submit that carries any other."""

    payment_hash: Hex64
    preimage: Hex64
    refund_to: RefundTo | None = None  # where the provider refunds the unused part (docs/payments.md#refunds)


class JobSubmit(Payload, kw_only=True):
    """The job itself (21038), over HTTP to the winner, bound to its award. At PL0 the job and its salt travel
    in clear; at PL1/PL2 both are inside `sealed` (a `SealedJob`), so nothing in clear lets an observer of the
    link confirm a guessed prompt from `input_sha256`."""

    job_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    award: Hex64  # the award event's id
    privacy: PrivacyLevel
    request: InferenceRequest | None = None  # PL0
    salt: Hex64 | None = None  # PL0: the salt of `input_sha256`
    sealed: str | None = None  # PL1/PL2: NIP-44 v2 ciphertext of a `SealedJob` JSON, to the provider's key
    input_sha256: Hex64  # job_hash(job, salt): equal to the RFB's job_hash the bid was for
    max_cost_msat: Msat
    payment: JobPayment | None = None  # the provider's invoice for this award, paid (docs/federation.md#settlement)


class Receipt(Payload, kw_only=True):
    """What the provider attests it did (21044): signed by the provider, stored by both routers."""

    job_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    job_submit: Hex64
    requester: Hex64
    provider: Hex64
    input_sha256: Hex64  # the submit's (salted) input_sha256
    output_sha256: Hex64
    usage: Usage
    price_msat: Msat
    status: Literal["ok", "failed", "cancelled"]
    started_ms: UnixMs
    finished_ms: UnixMs
    payment_hash: Hex64 | None = None  # a paid job: the provider's invoice it was paid with
    settlement: Settlement | None = None  # a paid job: what the provider used, refunds and keeps of its invoice


class SealedOutput(Payload, kw_only=True):
    """What `JobResult.sealed_output` decrypts to at PL1/PL2: the output and the provider's chain."""

    output: str
    chain: InferResult


class JobResult(Payload, kw_only=True):
    """The provider's answer (21039), e-tagged to the job.submit: the output (sealed at PL1/PL2), the signed
    receipt, and the provider's own verified chain down to its node."""

    job_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    output: str | None = None
    sealed_output: str | None = None
    receipt: Event
    chain: InferResult | None = None


def job_request(original: InferenceRequest) -> InferenceRequest:
    """What leaves the router when a request is offloaded: the model, prompt and sampling options only (no
    client identity, quote, pins, caps or payment data). The provider, the requester and the client all
    derive it the same way, so the client can check what was sent on its behalf."""
    return msgspec.structs.replace(
        original,
        client=None,
        origin=None,
        quote_id=None,
        max_price_msat=None,
        payment=None,
        forwarded_payment=None,
        nodes=None,
        exclude_nodes=None,
        stream=False,
    )


def new_salt() -> str:
    """A fresh secret salt for one auction's `job_hash` (32 random bytes, hex)."""
    return secrets.token_hex(32)


def job_hash(request: InferenceRequest, salt: str) -> str:
    """HMAC-SHA256, keyed by the hex `salt`, of the canonical JSON of `job_request(request)`: the RFB's `job_hash`,
    the job.submit's and the receipt's `input_sha256`. Published on relays, it confirms nothing about the prompt
    to anyone without the salt; the provider (from the submit) and the client (from the answer's `offload`) can
    recompute it."""
    key = bytes.fromhex(salt)
    if len(key) != 32:
        raise ValueError("a job salt is 32 bytes of hex")
    return hmac.new(key, msgspec.json.encode(job_request(request)), hashlib.sha256).hexdigest()
