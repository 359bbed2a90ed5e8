"""What the SDK raises, by what went wrong (like httpx's exception tree):

    FedaiClientError            everything the SDK raises
    ├── TransportError          no answer from the router; `__cause__` is the httpx exception
    │   ├── RouterUnreachable   no connection: refused, DNS, TLS, connect timeout, unusable URL
    │   ├── RouterTimeout       connected, but the router sent nothing in time
    │   └── ConnectionLost      the connection dropped or broke HTTP before the answer was complete
    ├── RouterError             the router answered with a typed error: `code`, `status`, `message`, `retry_after_ms`
    │   ├── RouterKeyMismatch   the router's key is not the pinned one (`wrong_recipient`): `pinned`, `actual`
    │   └── PaymentRequiredError  402 `payment_required`, with the `payment_request` to pay when there is one
    ├── UnexpectedResponse      something answered, but not as the protocol says (code `upstream_error`)
    ├── StreamLimitExceeded     the stream crossed one of the client's `stream_limits` (`cap`, `code`)
    ├── ChainError              the answer failed verification: `link` names the link (code `invalid_event`)
    └── InvalidRequest          the arguments make no valid request; nothing was sent (code `invalid_request`)

All but the transport errors are also `FedaiError`s, so `except FedaiError` and `err.code` keep working for
every answer the router gave; a transport error has no protocol code, because the router said nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import httpx
import msgspec

from fedai.protocol.errors import STATUS, ErrorCode, FedaiError
from fedai.protocol.event import Event, event_from_obj
from fedai.protocol.keys import npub
from fedai.service.stream_limits import StreamCapExceeded


class FedaiClientError(Exception):
    """Base of everything the SDK raises while talking to a router or checking its answer."""

    def __repr__(self) -> str:
        code = getattr(self, "code", None)
        return f"{type(self).__name__}({f'{code.value!r}, ' if code is not None else ''}{str(self)!r})"


# -- the router could not be reached ------------------------------------------------------------------------


class TransportError(FedaiClientError):
    """No answer from the router (or only part of one): the httpx exception is chained as `__cause__`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RouterUnreachable(TransportError):
    """No connection to the router: refused, unknown host, TLS failure, connect timeout or an unusable URL."""


class RouterTimeout(TransportError):
    """Connected, but the router did not answer (or send the next bytes of a stream) within the client's
    timeout. A stream's own idle and total bounds raise `StreamLimitExceeded` instead."""


class ConnectionLost(TransportError):
    """The connection dropped, or broke HTTP, before the router's answer was complete."""


_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)


def transport_error(exc: httpx.HTTPError, *, streaming: bool = False) -> TransportError:
    """The typed error for an httpx failure, before the answer (`streaming=False`) or in the middle of a stream.
    The caller raises it `from exc`."""
    name = type(exc).__name__
    if isinstance(exc, _UNREACHABLE):
        return RouterUnreachable(f"router unreachable: {name}")
    if isinstance(exc, httpx.TimeoutException):
        return RouterTimeout(
            "router sent nothing within the read timeout" if streaming else "router did not answer in time"
        )
    return ConnectionLost(f"router stream broke: {name}" if streaming else f"router connection broke: {name}")


# -- the router answered, with an error or with something else ------------------------------------------------


class RouterError(FedaiClientError, FedaiError):
    """The router's typed error, as it sent it: `code`, `message`, `retry_after_ms` and the HTTP `status` it
    answered with (for an error event in a stream, the code's usual status)."""

    def __init__(
        self, code: ErrorCode | str, message: str, retry_after_ms: int | None = None, *, http_status: int | None = None
    ) -> None:
        super().__init__(code, message, retry_after_ms)
        self.http_status = http_status

    @property
    def status(self) -> int:
        return self.http_status if self.http_status is not None else STATUS[self.code]


class RouterKeyMismatch(RouterError):
    """The router refused a request sealed to the pinned `router_pubkey` (`wrong_recipient`), and its `/health`
    names another key: the pin is wrong, or this URL is another router. `pinned` and `actual` are hex."""

    def __init__(self, pinned: str, actual: str) -> None:
        super().__init__(
            ErrorCode.WRONG_RECIPIENT,
            f"the router's key does not match the one you pinned (pinned {npub(pinned)}, router answered as"
            f" {npub(actual)})",
            http_status=STATUS[ErrorCode.WRONG_RECIPIENT],
        )
        self.pinned = pinned
        self.actual = actual


class PaymentRequiredError(RouterError):
    """402 `payment_required`: the router serves this request paid only. `payment_request` is the router-signed
    payment request to pay when the router sent one (the request named a quote); pass it to `pay()`."""

    def __init__(self, message: str, payment_request: Event | None, *, http_status: int | None = None) -> None:
        super().__init__(ErrorCode.PAYMENT_REQUIRED, message, http_status=http_status)
        self.payment_request = payment_request


class UnexpectedResponse(FedaiClientError, FedaiError):
    """Something answered at the router's URL, but not as the protocol says: an error body that is no typed
    error (a proxy's HTML page, say), a malformed document or event stream, a stream without its final event."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(ErrorCode.UPSTREAM_ERROR, message)
        self.http_status = http_status

    @property
    def status(self) -> int:
        return self.http_status if self.http_status is not None else STATUS[self.code]


_CODES = frozenset(code.value for code in ErrorCode)


def _is_typed(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"] in _CODES


def error_from_body(body: Any, http_status: int | None = None) -> RouterError | UnexpectedResponse:
    """The error a router's `{"error": {...}}` body (decoded; None if it was not JSON) stands for."""
    parsed = FedaiError.from_dict(body, http_status)
    if not _is_typed(body):
        return UnexpectedResponse(parsed.message, http_status=http_status)
    if parsed.code == ErrorCode.PAYMENT_REQUIRED:
        return PaymentRequiredError(parsed.message, _payment_request(body), http_status=http_status)
    return RouterError(parsed.code, parsed.message, parsed.retry_after_ms, http_status=http_status)


def _payment_request(body: dict[str, Any]) -> Event | None:
    """The payment request a 402 carries (verified later, by `pay()`), or None."""
    nested = body["error"].get("payment_request")
    if not isinstance(nested, dict):
        return None
    try:
        return event_from_obj(nested)
    except FedaiError:
        return None


def error_from_response(http_status: int, content: bytes) -> RouterError | UnexpectedResponse:
    """The error a non-200 answer stands for, from its raw body."""
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        body = None
    return error_from_body(body, http_status)


# -- the client's own bounds and checks -----------------------------------------------------------------------


class StreamLimitExceeded(FedaiClientError, StreamCapExceeded):
    """The router's stream crossed one of the client's `stream_limits`; `cap` names it (duration, idle,
    output_bytes, chunks, wire_bytes), `code` is `upstream_timeout` for time and `upstream_error` for size."""

    @classmethod
    def of(cls, tripped: StreamCapExceeded) -> StreamLimitExceeded:
        return cls(tripped.cap, tripped.code, tripped.message)


class InvalidRequest(FedaiClientError, FedaiError):
    """The arguments do not make a valid request (unknown option, bad value); nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message)


class Link(StrEnum):
    """The link of a signed chain that failed verification (`ChainError.link`)."""

    QUOTE = "quote"  # the router's signed quote
    PAYMENT_REQUEST = "payment_request"  # the router's signed payment request and the payees' invoices
    ROUTER_ANSWER = "router_answer"  # the router's signed answer to the client's request
    FORWARDED = "forwarded"  # the request the router (or the provider router) forwarded to the node
    RESPONSE = "response"  # the node's signed response
    METERING = "metering"  # the node's signed metering record and its bindings
    OFFLOAD_SUBMIT = "offload.submit"  # the job the router submitted to a peer router
    OFFLOAD_RESULT = "offload.result"  # the provider router's signed job result
    OFFLOAD_RECEIPT = "offload.receipt"  # the provider router's signed receipt
    STREAM = "stream"  # the shape of the event stream (an unexpected event, a chunk after the end)
    STREAM_CHUNK = "stream.chunk"  # one router-signed chunk: signer, recipient, request, sequence
    STREAM_OUTPUT = "stream.output"  # the chunks together against the output the node signed
    COMPLETION_FEDAI = "completion.fedai"  # an OpenAI-style answer's `fedai` field
    COMPLETION_AUTHORIZATION = "completion.authorization"  # the NIP-98 event against the request body
    COMPLETION_RECORD = "completion.record"  # the router's record of an API-key call
    COMPLETION_OUTPUT = "completion.output"  # the text returned against the output the node signed


# the words each message starts with (`ChainError.step`), as they always read
STEPS: dict[Link, str] = {
    Link.QUOTE: "quote",
    Link.PAYMENT_REQUEST: "payment request",
    Link.ROUTER_ANSWER: "router answer",
    Link.FORWARDED: "forwarded request",
    Link.RESPONSE: "node response",
    Link.METERING: "metering",
    Link.OFFLOAD_SUBMIT: "job submit",
    Link.OFFLOAD_RESULT: "job result",
    Link.OFFLOAD_RECEIPT: "receipt",
    Link.STREAM: "stream",
    Link.STREAM_CHUNK: "stream chunk",
    Link.STREAM_OUTPUT: "stream",
    Link.COMPLETION_FEDAI: "fedai field",
    Link.COMPLETION_AUTHORIZATION: "authorization",
    Link.COMPLETION_RECORD: "request record",
    Link.COMPLETION_OUTPUT: "answer",
}


class ChainError(FedaiClientError, FedaiError):
    """The answer does not verify. `link` names the link that failed (a `Link`), `step` the same in words
    (the start of the message)."""

    def __init__(self, link: Link, message: str) -> None:
        self.link = Link(link)
        self.step = STEPS[self.link]
        super().__init__(ErrorCode.INVALID_EVENT, f"{self.step}: {message}")

    @classmethod
    def wrap(cls, link: Link, err: FedaiError) -> ChainError:
        """A protocol check that failed on `link`, with its code in the message."""
        return cls(link, f"{err.code.value}: {err.message}")
