# Long but one concept: each failure class of the SDK, case by case, against one mock router.
"""What the SDK raises, case by case, against a router played by `httpx.MockTransport` (no network): a
failure to reach the router is a `TransportError` with the httpx error as its cause, the router's typed error
arrives intact as a `RouterError`, and an answer that does not verify is a `ChainError` naming its link."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import PriceBreakdown, QuoteResponse, StreamChunk
from fedai.sdk import (
    AsyncClient,
    ChainError,
    Client,
    ConnectionLost,
    FedaiClientError,
    InvalidRequest,
    Link,
    RouterError,
    RouterTimeout,
    RouterUnreachable,
    StreamCapExceeded,
    StreamLimitExceeded,
    StreamLimits,
    TransportError,
    UnexpectedResponse,
)
from fedai.sdk.errors import STEPS
from fedai.sdk.openai import verify_completion
from fedai.service.sse import format_sse
from tests.unit.test_sdk_chain import CLIENT, MALLORY, NODE, ROUTER, build

URL = "http://router.test"
FLAVOURS = ["sync", "async"]
Handler = Callable[[httpx.Request], httpx.Response]
PROMPT = "what is 2+2?"  # the prompt `build` signs its chains for
ARGS: dict[str, tuple[str, ...]] = {"infer": ("m", PROMPT), "stream": ("m", PROMPT), "quote": ("m",)}
OPTIONS: dict[str, dict[str, Any]] = {
    "infer": {"max_tokens": 16},
    "stream": {"max_tokens": 16},
    "quote": {"max_tokens": 16, "prompt": PROMPT},
}
RATE_LIMITED = {"error": {"code": "rate_limited", "message": "slow down", "retry_after_ms": 1500}}


# -- a router played by a handler ---------------------------------------------------------------------------


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body sent part by part; an exception among the parts is raised when its turn comes."""

    def __init__(self, parts: list[bytes | Exception]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, Exception):
                raise part
            yield part

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self:
            yield part


def raising(error: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("scripted", request=request)

    return handler


def answering(status: int, **response: Any) -> Handler:
    return lambda _request: httpx.Response(status, **response)


def asked(request: httpx.Request) -> Event:
    return decode_event(request.content)


def chunk(request: Event, seq: int, delta: str, keys: Keys = ROUTER) -> bytes:
    event = seal(keys, Kind.STREAM_CHUNK, StreamChunk(seq=seq, delta=delta), to=request.pubkey, reply_to=request.id)
    return format_sse("chunk", event.to_json())


def done(request: Event, output: str = "4") -> bytes:
    return format_sse("done", build(request=request, output=output)[1].to_json())


def streaming(parts: Callable[[Event], list[bytes | Exception]]) -> Handler:
    """A router answering /infer/stream with these parts, made for the request it received."""
    return lambda request: httpx.Response(200, stream=Body(parts(asked(request))))


def quote_by(keys: Keys) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        event = asked(request)
        price = PriceBreakdown(input_msat=1, output_msat=2, router_fee_msat=0, total_msat=3)
        quote = QuoteResponse(
            quote_id="q1",
            model="m",
            node=NODE.pubkey,
            input_tokens=4,
            max_output_tokens=16,
            price=price,
            expires_at=2**40,
        )
        sealed = seal(keys, Kind.QUOTE_RESPONSE, quote, to=event.pubkey, reply_to=event.id)
        return httpx.Response(200, content=sealed.to_json())

    return handler


# -- the calls, through either client ------------------------------------------------------------------------


async def call(
    flavour: str,
    handler: Handler,
    method: str,
    *,
    pinned: bool = True,
    client_timeout: float = 120.0,
    limits: StreamLimits | None = None,
    **options: Any,
) -> Any:
    """One SDK call against `handler`; for `stream`, the deltas and the verified chain."""
    args = ARGS.get(method, ())
    options = {**OPTIONS.get(method, {}), **options}
    settings: dict[str, Any] = {
        "router_pubkey": ROUTER.pubkey if pinned else None,
        "timeout": client_timeout,
        "stream_limits": limits,
    }
    if flavour == "sync":
        with Client(URL, CLIENT, transport=httpx.MockTransport(handler), **settings) as client:
            if method != "stream":
                return getattr(client, method)(*args, **options)
            with client.stream(*args, **options) as stream:
                deltas = list(stream)
                return deltas, stream.chain
    async with AsyncClient(URL, CLIENT, transport=httpx.MockTransport(handler), **settings) as aclient:
        if method != "stream":
            result = getattr(aclient, method)(*args, **options)
            return await result if inspect.isawaitable(result) else result
        async with await aclient.stream(*args, **options) as astream:
            deltas = [delta async for delta in astream]
            return deltas, astream.chain


async def failure(flavour: str, handler: Handler, method: str, **kwargs: Any) -> FedaiClientError:
    with pytest.raises(FedaiClientError) as err:
        await call(flavour, handler, method, **kwargs)
    return err.value


# -- the hierarchy -------------------------------------------------------------------------------------------


def test_one_base_catches_everything_and_answers_stay_fedai_errors() -> None:
    for cls in (TransportError, RouterUnreachable, RouterTimeout, ConnectionLost):
        assert issubclass(cls, FedaiClientError) and not issubclass(cls, FedaiError)
    for cls in (RouterError, UnexpectedResponse, StreamLimitExceeded, ChainError, InvalidRequest):
        assert issubclass(cls, FedaiClientError) and issubclass(cls, FedaiError)
    assert issubclass(StreamLimitExceeded, StreamCapExceeded)
    assert set(STEPS) == set(Link)


# -- could not reach the router ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("method", ["infer", "stream", "quote", "status", "models", "peers"])
@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (httpx.ConnectError, RouterUnreachable, "router unreachable: ConnectError"),
        (httpx.ConnectTimeout, RouterUnreachable, "router unreachable: ConnectTimeout"),
        (httpx.UnsupportedProtocol, RouterUnreachable, "router unreachable: UnsupportedProtocol"),
        (httpx.ReadTimeout, RouterTimeout, "router did not answer in time"),
        (httpx.WriteTimeout, RouterTimeout, "router did not answer in time"),
        (httpx.RemoteProtocolError, ConnectionLost, "router connection broke: RemoteProtocolError"),
        (httpx.ReadError, ConnectionLost, "router connection broke: ReadError"),
    ],
)
async def test_a_router_that_cannot_be_reached_is_a_transport_error(
    flavour: str, method: str, raised: type[httpx.TransportError], expected: type[TransportError], message: str
) -> None:
    err = await failure(flavour, raising(raised), method)
    assert type(err) is expected and isinstance(err, TransportError)
    assert isinstance(err.__cause__, raised)  # the underlying cause, chained
    assert (str(err), err.message) == (message, message)
    assert not isinstance(err, FedaiError) and not hasattr(err, "code")  # the router said nothing: no code


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_reading_the_router_key_from_health_fails_the_same_way(flavour: str) -> None:
    err = await failure(flavour, raising(httpx.ConnectError), "infer", pinned=False)
    assert isinstance(err, RouterUnreachable)
    err = await failure(flavour, answering(200, json={"pubkey": "npub1nope"}), "infer", pinned=False)
    assert isinstance(err, UnexpectedResponse) and err.message == "router's /health names no valid pubkey"


# -- the router answered with a typed error ------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("method", ["infer", "stream", "quote", "status", "models", "peers", "explain_route"])
async def test_the_routers_typed_error_is_kept_intact(flavour: str, method: str) -> None:
    args = {"model": "m"} if method == "explain_route" else {}
    err = await failure(flavour, answering(429, json=RATE_LIMITED), method, **args)
    assert type(err) is RouterError and isinstance(err, FedaiError)
    assert (err.code, err.status, err.message, err.retry_after_ms) == ("rate_limited", 429, "slow down", 1500)
    assert err.to_dict() == RATE_LIMITED


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_the_status_is_the_one_the_router_answered_with(flavour: str) -> None:
    body = {"error": {"code": "no_capacity", "message": "busy"}}
    err = await failure(flavour, answering(429, json=body), "infer")
    assert isinstance(err, RouterError) and (err.code, err.status, err.http_status) == ("no_capacity", 429, 429)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("method", ["infer", "stream", "status"])
async def test_an_error_that_is_not_the_protocols_is_an_unexpected_response(flavour: str, method: str) -> None:
    err = await failure(flavour, answering(502, text="<html>bad gateway</html>"), method)
    assert type(err) is UnexpectedResponse and isinstance(err, FedaiError)
    assert (err.code, err.status, err.message) == ("upstream_error", 502, "unrecognised error body (HTTP 502)")


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("method", "body"), [("status", b"not json"), ("status", b"[1]"), ("peers", b"{}")])
async def test_a_document_of_the_wrong_shape_is_an_unexpected_response(flavour: str, method: str, body: bytes) -> None:
    err = await failure(flavour, answering(200, content=body), method)
    assert type(err) is UnexpectedResponse and err.message.startswith("router answered with something that is not")


# -- the answer failed verification --------------------------------------------------------------------------


def router_answering(**tamper: Any) -> Handler:
    """A router answering /infer with the chain `build` makes for the request it received, tampered as told."""
    return lambda request: httpx.Response(200, content=build(request=asked(request), **tamper)[1].to_json())


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_genuine_chain_verifies(flavour: str) -> None:
    chain = await call(flavour, router_answering(), "infer")
    assert (chain.output, chain.node, chain.router) == ("4", NODE.pubkey, ROUTER.pubkey)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("handler", "link"),
    [
        (router_answering(router_keys=MALLORY), Link.ROUTER_ANSWER),
        (answering(200, content=b"not an event"), Link.ROUTER_ANSWER),
        (router_answering(node_keys=MALLORY), Link.RESPONSE),
        (router_answering(metering_overrides={"output_sha256": "0" * 64}), Link.METERING),
        (router_answering(metering_overrides={"input_tokens": 5}), Link.METERING),
    ],
)
async def test_a_chain_that_does_not_verify_names_its_link(flavour: str, handler: Handler, link: Link) -> None:
    err = await failure(flavour, handler, "infer")
    assert type(err) is ChainError and isinstance(err, FedaiError)
    assert (err.link, err.step, err.code) == (link, STEPS[link], "invalid_event")
    assert err.message.startswith(f"{STEPS[link]}: ")


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_quote_must_be_signed_by_the_router(flavour: str) -> None:
    assert (await call(flavour, quote_by(ROUTER), "quote")).quote.quote_id == "q1"
    err = await failure(flavour, quote_by(MALLORY), "quote")
    assert isinstance(err, ChainError) and (err.link, err.step) == (Link.QUOTE, "quote")
    assert err.message == "quote: forbidden: signer is not allowed here"


# -- streams ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_genuine_stream(flavour: str) -> None:
    deltas, chain = await call(flavour, streaming(lambda r: [chunk(r, 0, "4"), done(r)]), "stream")
    assert (deltas, chain.output) == (["4"], "4")


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("parts", "link"),
    [
        (lambda r: [chunk(r, 0, "4", keys=MALLORY), done(r)], Link.STREAM_CHUNK),
        (lambda r: [chunk(r, 1, "4"), done(r)], Link.STREAM_CHUNK),
        (lambda r: [chunk(r, 0, "5"), done(r)], Link.STREAM_OUTPUT),
        (lambda r: [chunk(r, 0, "4"), format_sse("surprise", b"{}")], Link.STREAM),
        (lambda r: [chunk(r, 0, "4"), format_sse("done", b"not an event")], Link.ROUTER_ANSWER),
    ],
)
async def test_a_stream_that_does_not_verify_names_its_link(
    flavour: str, parts: Callable[[Event], list[bytes | Exception]], link: Link
) -> None:
    err = await failure(flavour, streaming(parts), "stream")
    assert isinstance(err, ChainError) and (err.link, err.step) == (link, STEPS[link])


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_an_error_event_mid_stream_is_the_routers_typed_error(flavour: str) -> None:
    error = format_sse("error", msgspec.json.encode(RATE_LIMITED))
    err = await failure(flavour, streaming(lambda r: [chunk(r, 0, "4"), error]), "stream")
    assert type(err) is RouterError
    assert (err.code, err.status, err.message, err.retry_after_ms) == ("rate_limited", 429, "slow down", 1500)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("last", "message"),
    [
        (format_sse("error", b"not json"), "malformed error event"),
        (format_sse("error", b'{"error": "nope"}'), "unrecognised error body (HTTP None)"),
        (b"", "stream ended without a result"),
    ],
)
async def test_a_stream_outside_the_protocol_is_an_unexpected_response(flavour: str, last: bytes, message: str) -> None:
    err = await failure(flavour, streaming(lambda r: [chunk(r, 0, "4"), last]), "stream")
    assert type(err) is UnexpectedResponse and (err.code, err.message) == ("upstream_error", message)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_connection_dropped_mid_stream_is_connection_lost(flavour: str) -> None:
    dropped = httpx.ReadError("dropped")
    err = await failure(flavour, streaming(lambda r: [chunk(r, 0, "4"), dropped]), "stream")
    assert type(err) is ConnectionLost and err.message == "router stream broke: ReadError"
    assert err.__cause__ is dropped


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_silent_stream_trips_the_idle_bound_or_the_clients_read_timeout(flavour: str) -> None:
    silent = streaming(lambda r: [chunk(r, 0, "4"), httpx.ReadTimeout("silent")])
    # the default read timeout is cut to the stream's idle bound, so a read timing out is that bound
    err = await failure(flavour, silent, "stream")
    assert type(err) is StreamLimitExceeded and (err.cap, err.code) == ("idle", "upstream_timeout")
    assert err.message == "router stream sent no output for 90 s"
    # a client timeout shorter than the idle bound is the client's own read timeout
    err = await failure(flavour, silent, "stream", client_timeout=5.0)
    assert type(err) is RouterTimeout and err.message == "router sent nothing within the read timeout"


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_stream_beyond_the_clients_limits(flavour: str) -> None:
    limits = StreamLimits(max_output_bytes=2)
    err = await failure(flavour, streaming(lambda r: [chunk(r, 0, "4 and 4"), done(r)]), "stream", limits=limits)
    assert type(err) is StreamLimitExceeded and isinstance(err, StreamCapExceeded)
    assert (err.cap, err.code, err.message) == (
        "output_bytes",
        "upstream_error",
        "router stream exceeded 2 bytes of output",
    )


# -- requests the SDK will not send --------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("method", ["infer", "quote"])
async def test_an_invalid_request_is_not_sent(flavour: str, method: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    err = await failure(flavour, handler, method, unknown_option=1)
    assert type(err) is InvalidRequest and err.code == "invalid_request"
    assert sent == []


# -- OpenAI-style answers ------------------------------------------------------------------------------------


def test_a_completion_without_its_chain_names_the_fedai_field() -> None:
    params = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ChainError) as err:
        verify_completion({"choices": []}, ROUTER.pubkey, params)
    assert (err.value.link, err.value.message) == (
        Link.COMPLETION_FEDAI,
        "fedai field: the answer carries no fedai chain",
    )
    with pytest.raises(ChainError) as err:
        verify_completion({"fedai": {"request": 1, "answer": 2}}, ROUTER.pubkey, params)
    assert err.value.link == Link.COMPLETION_FEDAI


def test_a_completion_checked_against_an_invalid_request() -> None:
    request, answer = build()
    fedai = {"request": request.to_dict(), "answer": answer.to_dict()}
    with pytest.raises(InvalidRequest):
        verify_completion({"fedai": fedai}, ROUTER.pubkey, {"model": "m"})
