"""Using a fedai router from OpenAI-compatible clients, and checking what they get back.

`NostrAuth` signs every HTTP request with NIP-98 (plug it into httpx, and so into the `openai` package);
`verify_completion` checks the `fedai` field of an answer, and `verify_stream` the chunks of a streamed one: the
router's signed chain down to the node's metering, against the request the caller actually made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterable, Mapping
from typing import Any

import httpx
import msgspec

from fedai.keyfile import secret_keys
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import event_from_obj
from fedai.protocol.keys import Keys
from fedai.protocol.messages import InferenceRequest, PaymentProof
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from fedai.protocol.openai_map import chat_request, completion_request
from fedai.sdk.chain import VerifiedChain, router_key, verify_chain
from fedai.sdk.errors import ChainError, InvalidRequest, Link

CHUNK_OBJECT = "chat.completion.chunk"


class NostrAuth(httpx.Auth):
    """httpx authentication: a fresh NIP-98 event (URL, method, body hash) on every request. `keys`: `Keys`, a
    secret (nsec, hex) or the path of a key file."""

    requires_request_body = True

    def __init__(self, keys: Keys | str) -> None:
        self.keys = secret_keys(keys)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = auth_header(self.keys, request.method, str(request.url), request.content)
        yield request


def _document(value: Any) -> Mapping[str, Any]:
    """A JSON object as a dict: a Mapping as is, an `openai` response object through its `model_dump()`."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    raise InvalidRequest(f"expected a JSON object or an openai response object, got {type(value).__name__}")


def _original(request: Mapping[str, Any] | bytes, kind: str, streamed: bool) -> InferenceRequest:
    """The InferenceRequest the router should have derived from what was sent. A streamed answer can only answer
    a request with `stream: true` (the only stream option the mapping keeps), so it needs not be passed back."""
    params = json.loads(request) if isinstance(request, bytes) else dict(request)
    if streamed and not isinstance(request, bytes):
        params["stream"] = True
    try:
        return chat_request(params) if kind == "chat" else completion_request(params)
    except FedaiError as err:
        raise InvalidRequest(err.message) from None


class PaidCall(msgspec.Struct, forbid_unknown_fields=True):
    quote_id: str
    proof: PaymentProof


def _paid_by_router(original: InferenceRequest, payment: Any) -> InferenceRequest:
    """A paying router paid the call from the caller's bound wallet (docs/payments.md#the-openai-edge): the
    request then names the quote it made and carries that proof, which the chain check follows to the node."""
    if payment is None:
        return original
    try:
        paid = msgspec.convert(payment, PaidCall)
    except msgspec.ValidationError as err:
        raise ChainError(Link.COMPLETION_FEDAI, f"the payment the answer names is malformed: {err}") from None
    return msgspec.structs.replace(original, quote_id=paid.quote_id, payment=paid.proof)


def _caller(asked: Any, router: str, request: Mapping[str, Any] | bytes) -> str:
    """The client's key: the NIP-98 signer (its payload hash checked against a raw body), or the `client` tag of
    the router's own record of an API-key call."""
    if asked.kind == KIND_HTTP_AUTH:
        if isinstance(request, bytes) and asked.tag("payload") != hashlib.sha256(request).hexdigest():
            raise ChainError(Link.COMPLETION_AUTHORIZATION, "the signed payload hash is not this request body")
        return str(asked.pubkey)
    client = asked.tag("client") or ""
    if asked.pubkey != router:
        raise ChainError(Link.COMPLETION_RECORD, "the record of this API-key call is signed by another key")
    if not client:
        raise ChainError(Link.COMPLETION_RECORD, "the router's record of this API-key call names no client")
    return str(client)


def _returned_text(response: Mapping[str, Any], kind: str) -> str:
    try:
        choice = (response.get("choices") or [{}])[0]
        return str(choice["message"]["content"] if kind == "chat" else choice["text"])
    except (KeyError, IndexError, TypeError):
        raise ChainError(Link.COMPLETION_OUTPUT, "the answer carries no text") from None


def verify_completion(
    response: Mapping[str, Any] | Any,
    router_pubkey: str,
    request: Mapping[str, Any] | bytes,
    *,
    kind: str = "chat",
    output: str | None = None,
) -> VerifiedChain:
    """Check a chat/text completion (or the last chunk of a stream, with the concatenated `output`).

    `response`: the answer as a dict or the `openai` package's object. `router_pubkey`: npub or hex. `request`:
    what was sent, the JSON body bytes (then the NIP-98 `payload` hash is checked too) or the dict of parameters
    given to `create(**request)`; for a stream (`output` given, or a chunk), `stream: true` is implied. Raises
    `ChainError` naming the link that failed (`InvalidRequest` if `request` or the key is not valid).
    """
    router = router_key(router_pubkey)
    answer_doc = _document(response)
    fedai = answer_doc.get("fedai")
    if not isinstance(fedai, Mapping):
        raise ChainError(Link.COMPLETION_FEDAI, "the answer carries no fedai chain")
    try:
        asked = event_from_obj(fedai.get("request"))
        answer = event_from_obj(fedai.get("answer"))
    except FedaiError as err:
        raise ChainError.wrap(Link.COMPLETION_FEDAI, err) from None
    streamed = output is not None or answer_doc.get("object") == CHUNK_OBJECT
    original = _paid_by_router(_original(request, kind, streamed), fedai.get("payment"))
    client = _caller(asked, router, request)
    chain = verify_chain(asked, answer, router, client=client, original=original)
    if output is None:
        output = _returned_text(answer_doc, kind)
    if output != chain.output:
        raise ChainError(Link.COMPLETION_OUTPUT, "the text returned is not the output the node signed")
    return chain


def _delta(chunk: Mapping[str, Any], kind: str) -> str:
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], Mapping):
        return ""
    if kind == "chat":
        delta = choices[0].get("delta") or {}
        return str(delta.get("content") or "") if isinstance(delta, Mapping) else ""
    return str(choices[0].get("text") or "")


def verify_stream(
    chunks: Iterable[Mapping[str, Any] | Any],
    router_pubkey: str,
    request: Mapping[str, Any] | bytes,
    *,
    kind: str = "chat",
) -> VerifiedChain:
    """Check a streamed completion from all its chunks (dicts or the `openai` package's chunk objects, in the
    order received): the text deltas joined must be the output the node signed, and the chunk carrying `fedai`
    the chain for `request` (what was given to `create(**request)`, with or without `stream`)."""
    deltas: list[str] = []
    final: Mapping[str, Any] | None = None
    for item in chunks:
        chunk = _document(item)
        deltas.append(_delta(chunk, kind))
        if isinstance(chunk.get("fedai"), Mapping):
            final = chunk
    if final is None:
        raise ChainError(Link.COMPLETION_FEDAI, "no chunk of the stream carries the fedai chain")
    return verify_completion(final, router_pubkey, request, kind=kind, output="".join(deltas))
