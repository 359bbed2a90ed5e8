"""Using a fedai router from OpenAI-compatible clients, and checking what they get back.

`NostrAuth` signs every HTTP request with NIP-98 (plug it into httpx, and so into the `openai` package);
`verify_completion` checks the `fedai` field of an answer: the router's signed chain down to the node's
metering, against the request the caller actually made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from typing import Any

import httpx

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import event_from_obj
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import KIND_HTTP_AUTH, auth_header
from fedai.protocol.openai_map import chat_request, completion_request
from fedai.sdk.chain import VerifiedChain, verify_chain
from fedai.sdk.errors import ChainError, InvalidRequest, Link


class NostrAuth(httpx.Auth):
    """httpx authentication: a fresh NIP-98 event (URL, method, body hash) on every request."""

    requires_request_body = True

    def __init__(self, keys: Keys | str) -> None:
        self.keys = keys if isinstance(keys, Keys) else Keys.parse(keys)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = auth_header(self.keys, request.method, str(request.url), request.content)
        yield request


def verify_completion(
    response: Mapping[str, Any],
    router_pubkey: str,
    request: Mapping[str, Any] | bytes,
    *,
    kind: str = "chat",
    output: str | None = None,
) -> VerifiedChain:
    """Check a chat/text completion (or the last chunk of a stream, with the concatenated `output`).

    `request` is what was sent: the JSON body bytes (then a NIP-98 `payload` hash is checked too) or the
    parameters as a dict. Raises `ChainError` naming the link that failed (`InvalidRequest` if `request` is not a
    valid request).
    """
    fedai = response.get("fedai")
    if not isinstance(fedai, Mapping):
        raise ChainError(Link.COMPLETION_FEDAI, "the answer carries no fedai chain")
    try:
        asked = event_from_obj(fedai.get("request"))
        answer = event_from_obj(fedai.get("answer"))
    except FedaiError as err:
        raise ChainError.wrap(Link.COMPLETION_FEDAI, err) from None
    params = json.loads(request) if isinstance(request, bytes) else dict(request)
    try:
        original = chat_request(params) if kind == "chat" else completion_request(params)
    except FedaiError as err:
        raise InvalidRequest(err.message) from None
    if asked.kind == KIND_HTTP_AUTH:
        client = asked.pubkey
        if isinstance(request, bytes) and asked.tag("payload") != hashlib.sha256(request).hexdigest():
            raise ChainError(Link.COMPLETION_AUTHORIZATION, "the signed payload hash is not this request body")
    else:  # an API-key call: the router's own signed record of it
        client = asked.tag("client") or ""
        if asked.pubkey != router_pubkey or not client:
            raise ChainError(Link.COMPLETION_RECORD, "not a record signed by this router")
    chain = verify_chain(asked, answer, router_pubkey, client=client, original=original)
    if output is None:
        try:
            choice = (response.get("choices") or [{}])[0]
            output = choice["message"]["content"] if kind == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise ChainError(Link.COMPLETION_OUTPUT, "the answer carries no text") from None
    if output != chain.output:
        raise ChainError(Link.COMPLETION_OUTPUT, "the text returned is not the output the node signed")
    return chain
