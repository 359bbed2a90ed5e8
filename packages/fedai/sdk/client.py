"""Clients for a fedai router: sign requests with the client's key, verify what comes back.

`Client` is synchronous, `AsyncClient` asynchronous; both share request building and answer checking (one file:
the two clients mirror each other method by method).
What they raise is a `FedaiClientError` (`fedai.sdk.errors`): a `TransportError` when the router could not be
reached, a `RouterError` with the protocol code when it answered with an error, a `ChainError` naming the link
when its answer does not verify.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec

from fedai.keyfile import secret_keys
from fedai.observability.tracing import annotate, inject, span
from fedai.payments.wallet import Wallet
from fedai.protocol.envelope import Opened, open_envelope, seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    ChatMessage,
    InferenceRequest,
    PaymentProof,
    PaymentRequest,
    QuoteRequest,
    QuoteResponse,
)
from fedai.protocol.nip98 import auth_header
from fedai.sdk.chain import VerifiedChain, router_key, verify_chain
from fedai.sdk.errors import (
    ChainError,
    FedaiClientError,
    InvalidRequest,
    Link,
    UnexpectedResponse,
    error_from_response,
    transport_error,
)
from fedai.sdk.pay import (
    DEFAULT_MAX_FEE_MSAT,
    answered_request,
    pay_event,
    pay_request,
    pay_with_spec,
    verify_payment_request,
)
from fedai.sdk.pin import check_pin, health_pubkey, refused_for_pin
from fedai.sdk.settlement import checked_refund_to, with_refund_to
from fedai.sdk.stream import DEFAULT_STREAM_LIMITS, AsyncStream, Stream
from fedai.service.stream_limits import StreamLimits

MAX_ANSWER_BYTES = 16 * 1024 * 1024
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Quote:
    event: Event
    quote: QuoteResponse


def _messages(messages: list[dict[str, str]] | None) -> list[ChatMessage] | None:
    return None if messages is None else [ChatMessage(role=m["role"], content=m["content"]) for m in messages]


def _infer_request(
    model: str, prompt: str | None, messages: list[dict[str, str]] | None, max_tokens: int, options: dict[str, Any]
) -> InferenceRequest:
    try:
        return InferenceRequest(
            model=model, prompt=prompt, messages=_messages(messages), max_tokens=max_tokens, **options
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidRequest(str(exc)) from None


def _raise_for(response: httpx.Response) -> None:
    """Raise the router's error (`RouterError`, or `UnexpectedResponse` for an untyped one) unless it said 200."""
    if response.status_code != 200:
        raise error_from_response(response.status_code, response.content)


def _document(response: httpx.Response) -> Any:
    _raise_for(response)
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        raise UnexpectedResponse("router answered with something that is not JSON", http_status=200) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    document = _document(response)
    if not isinstance(document, dict):
        raise UnexpectedResponse("router answered with something that is not a JSON object", http_status=200)
    return document


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    document = _document(response)
    if not isinstance(document, list):
        raise UnexpectedResponse("router answered with something that is not a list", http_status=200)
    return [item for item in document if isinstance(item, dict)]


def _model_ids(document: dict[str, Any]) -> list[str]:
    data = document.get("data")
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m] if isinstance(data, list) else []


def _explain_query(model: str, demand: dict[str, Any]) -> str:
    params: dict[str, str] = {"model": model}
    for name, value in demand.items():
        if value is not None:
            params[name] = ",".join(value) if isinstance(value, list | tuple | frozenset | set) else str(value)
    return urlencode(params)


def _answer_event(response: httpx.Response) -> Event:
    _raise_for(response)
    try:
        return decode_event(response.content, MAX_ANSWER_BYTES)
    except FedaiError as err:
        raise ChainError.wrap(Link.ROUTER_ANSWER, err) from None


def _payment_request(response: httpx.Response) -> Event:
    _raise_for(response)
    return answered_request(response.content)


def _open_quote(keys: Keys, router: str, request: Event, response: httpx.Response) -> Quote:
    _raise_for(response)
    try:
        opened = open_envelope(
            response.content,
            QuoteResponse,
            kinds=(Kind.QUOTE_RESPONSE,),
            recipient=keys.pubkey,
            signers=(router,),
            reply_to=request.id,
            max_bytes=MAX_ANSWER_BYTES,
            skew_s=None,
        )
    except FedaiError as err:
        raise ChainError.wrap(Link.QUOTE, err) from None
    return Quote(opened.event, opened.payload)


class _Base:
    def __init__(
        self,
        router_url: str,
        keys: Keys | str | None,
        router_pubkey: str | None,
        admin_token: str | None,
        admin_keys: Keys | None,
        stream_limits: StreamLimits | None,
    ) -> None:
        self.router_url = router_url.rstrip("/")
        self.keys = secret_keys(keys)
        self._router = router_key(router_pubkey) if router_pubkey else None
        self._pinned = self._router is not None
        self.stream_limits = stream_limits or DEFAULT_STREAM_LIMITS
        self._admin_token = admin_token
        self._admin_keys = admin_keys

    def _ops_headers(self, path: str) -> dict[str, str]:
        """Operator credentials for the ops views, when configured: the token, else a NIP-98 event for this URL
        (the router checks it against its ROUTER_PUBLIC_URL, so `router_url` must be that URL)."""
        if self._admin_token:
            return {"Authorization": f"Bearer {self._admin_token}"}
        if self._admin_keys is not None:
            return {"Authorization": auth_header(self._admin_keys, "GET", self.router_url + path)}
        return {}

    def _quote_event(self, router: str, model: str, max_tokens: int, **fields: Any) -> Event:
        messages = fields.pop("messages", None)
        try:
            payload = QuoteRequest(model=model, max_tokens=max_tokens, messages=_messages(messages), **fields)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidRequest(str(exc)) from None
        return seal(self.keys, Kind.QUOTE_REQUEST, payload, to=router, nonce=True)

    def _infer_event(
        self, router: str, model: str, prompt: str | None, messages: Any, max_tokens: int, options: dict[str, Any]
    ) -> Event:
        payload = _infer_request(model, prompt, messages, max_tokens, options)
        return seal(self.keys, Kind.INFER_REQUEST, payload, to=router, nonce=True)

    def _verified(self, request: Event, quote: Quote | str, router: str, network: str) -> Opened[PaymentRequest]:
        terms = quote if isinstance(quote, str) else quote.quote
        return verify_payment_request(request, terms, router=router, client=self.keys.pubkey, network=network)

    def _client_auth(self, path: str) -> dict[str, str]:
        """A NIP-98 event by this client's key for `GET path` (the router checks it against ROUTER_PUBLIC_URL)."""
        return {"Authorization": auth_header(self.keys, "GET", self.router_url + path)}

    @staticmethod
    def _pubkey_from_health(response: httpx.Response) -> str:
        return health_pubkey(_json(response))


class Client(_Base):
    """Synchronous client. Pin `router_pubkey` in production; without it the key is read from `/health` once.
    `admin_token` or `admin_keys` (an operator's) unlock the operator views of `status` and `explain_route`."""

    def __init__(
        self,
        router_url: str,
        keys: Keys | str | None = None,
        *,
        router_pubkey: str | None = None,
        timeout: float = 120.0,
        admin_token: str | None = None,
        admin_keys: Keys | None = None,
        stream_limits: StreamLimits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`stream_limits` bounds each stream (duration, idle time, output, chunks); default DEFAULT_STREAM_LIMITS.
        `transport` replaces httpx's network transport, e.g. `httpx.MockTransport(handler)` in tests."""
        super().__init__(router_url, keys, router_pubkey, admin_token, admin_keys, stream_limits)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def router_pubkey(self) -> str:
        if self._router is None:
            self._router = self._pubkey_from_health(self._get("/health"))
        return self._router

    def _get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self._http.get(self.router_url + path, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    def _post(self, path: str, event: Event) -> httpx.Response:
        try:
            with span("client.request", {"url.path": path}, kind="client"):  # its traceparent goes in a header
                response = self._http.post(self.router_url + path, content=event.to_json(), headers=inject(JSON))
                annotate({"http.response.status_code": response.status_code})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            self._explain(error_from_response(response.status_code, response.content))
        return response

    def _explain(self, err: FedaiClientError) -> None:
        """Raise `RouterKeyMismatch` instead of a `wrong_recipient` that a wrong pin caused."""
        if self._pinned and self._router is not None and refused_for_pin(err):
            try:
                health = _json(self._get("/health"))
            except FedaiClientError:
                return
            check_pin(self._router, health)

    def quote(self, model: str, *, max_tokens: int, **fields: Any) -> Quote:
        """Ask for a signed price. `fields`: prompt, messages, input_tokens, job_type."""
        router = self.router_pubkey()
        event = self._quote_event(router, model, max_tokens, **fields)
        return _open_quote(self.keys, router, event, self._post("/quote", event))

    def pay(
        self,
        quote: Quote,
        wallet: str,
        *,
        payment_request: Event | None = None,
        network: str = "bitcoin",
        max_fee_msat: int = DEFAULT_MAX_FEE_MSAT,
        refund_to: str | None = None,
    ) -> PaymentProof:
        """Pay `quote` from the wallet `wallet` names (a URI or a file: docs/payments.md#wallet-uris), its payment
        request from `POST /pay` or the one a `PaymentRequiredError` carried, after verifying it; returns the proof
        for `infer(..., quote_id=..., payment=proof)`. The wallet is opened, used and closed in an event loop of
        its own (`asyncio.run`); `AsyncClient.pay` takes an open `Wallet` instead. `refund_to` (a Lightning
        address, LNURL-pay URL or receive-only NWC URI) is where payees refund what the answer did not use
        (docs/payments.md#refunds)."""
        refund_to = checked_refund_to(refund_to)
        router = self.router_pubkey()
        if payment_request is None:
            event = pay_event(self.keys, router, quote.quote.quote_id)
            payment_request = _payment_request(self._post("/pay", event))
        opened = self._verified(payment_request, quote, router, network)
        return with_refund_to(asyncio.run(pay_with_spec(opened, wallet, max_fee_msat=max_fee_msat)), refund_to)

    def payment_request(self, quote: Quote | str, *, network: str = "bitcoin") -> Opened[PaymentRequest]:
        """`POST /pay` for `quote` (a `Quote`, or only its id), verified before anything is paid (with only the
        id, all but the split against the signed quote); pay it with `fedai.sdk.pay.pay_with_spec`."""
        router = self.router_pubkey()
        quote_id = quote if isinstance(quote, str) else quote.quote.quote_id
        event = _payment_request(self._post("/pay", pay_event(self.keys, router, quote_id)))
        return self._verified(event, quote, router, network)

    def payment_status(self, payment_id: str) -> dict[str, Any]:
        """`GET /payments/{id}` (NIP-98 by this client's key): one of this client's payment requests and each
        payee's state (issued, paid, consumed, released, refunded, expired) and, once answered, its `refund`:
        {state (pending, paying, paid, failed; stated, none), refund_msat, refunded_msat, used_msat, kept_msat}."""
        path = f"/payments/{payment_id}"
        return _json(self._get(path, self._client_auth(path)))

    def infer(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int = 256,
        **options: Any,
    ) -> VerifiedChain:
        """Run one inference and return the verified chain (raises `ChainError` if any link fails)."""
        router = self.router_pubkey()
        event = self._infer_event(router, model, prompt, messages, max_tokens, options)
        return verify_chain(event, _answer_event(self._post("/infer", event)), router)

    def stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int = 256,
        **options: Any,
    ) -> Stream:
        """Stream one inference: `with client.stream(...) as s: for delta in s: ...`, then `s.chain`."""
        router = self.router_pubkey()
        event = self._infer_event(router, model, prompt, messages, max_tokens, {**options, "stream": True})
        return Stream(
            self._http, self.router_url + "/infer/stream", event, router, self.stream_limits, explain=self._explain
        )

    def status(self) -> dict[str, Any]:
        """`GET /status`: the operator view with operator credentials (`"view": "operator"`), else the public
        summary (`"view": "public"`)."""
        return _json(self._get("/status", self._ops_headers("/status")))

    def explain_route(self, model: str, **demand: Any) -> dict[str, Any]:
        """How the router would route `model` now: each node's verdict and score parts (GET /route/explain,
        operators only). `demand`: input_tokens, max_tokens, job_type, max_price_msat, nodes, exclude_nodes."""
        path = "/route/explain?" + _explain_query(model, demand)
        return _json(self._get(path, self._ops_headers(path)))

    def peers(self) -> list[dict[str, Any]]:
        """`GET /federation/peers` (operators only): the peer routers learned from relays."""
        return _json_list(self._get("/federation/peers", self._ops_headers("/federation/peers")))

    def models(self) -> list[str]:
        """The model names the router can serve now (`GET /v1/models`, public)."""
        return _model_ids(_json(self._get("/v1/models")))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client with the same methods as `Client` (`transport`: an `httpx.AsyncBaseTransport`)."""

    def __init__(
        self,
        router_url: str,
        keys: Keys | str | None = None,
        *,
        router_pubkey: str | None = None,
        timeout: float = 120.0,
        admin_token: str | None = None,
        admin_keys: Keys | None = None,
        stream_limits: StreamLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(router_url, keys, router_pubkey, admin_token, admin_keys, stream_limits)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def router_pubkey(self) -> str:
        if self._router is None:
            self._router = self._pubkey_from_health(await self._get("/health"))
        return self._router

    async def _get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            return await self._http.get(self.router_url + path, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    async def _post(self, path: str, event: Event) -> httpx.Response:
        try:
            with span("client.request", {"url.path": path}, kind="client"):  # its traceparent goes in a header
                response = await self._http.post(self.router_url + path, content=event.to_json(), headers=inject(JSON))
                annotate({"http.response.status_code": response.status_code})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            await self._explain(error_from_response(response.status_code, response.content))
        return response

    async def _explain(self, err: FedaiClientError) -> None:
        if self._pinned and self._router is not None and refused_for_pin(err):
            try:
                health = _json(await self._get("/health"))
            except FedaiClientError:
                return
            check_pin(self._router, health)

    async def quote(self, model: str, *, max_tokens: int, **fields: Any) -> Quote:
        router = await self.router_pubkey()
        event = self._quote_event(router, model, max_tokens, **fields)
        return _open_quote(self.keys, router, event, await self._post("/quote", event))

    async def pay(
        self,
        quote: Quote,
        wallet: Wallet,
        *,
        payment_request: Event | None = None,
        network: str = "bitcoin",
        max_fee_msat: int = DEFAULT_MAX_FEE_MSAT,
        refund_to: str | None = None,
    ) -> PaymentProof:
        """Pay `quote` from `wallet` (an open `fedai.payments.wallet.Wallet`, the caller's to close); as
        `Client.pay`."""
        refund_to = checked_refund_to(refund_to)
        router = await self.router_pubkey()
        if payment_request is None:
            event = pay_event(self.keys, router, quote.quote.quote_id)
            payment_request = _payment_request(await self._post("/pay", event))
        opened = self._verified(payment_request, quote, router, network)
        return with_refund_to(await pay_request(opened, wallet, max_fee_msat=max_fee_msat), refund_to)

    async def payment_request(self, quote: Quote | str, *, network: str = "bitcoin") -> Opened[PaymentRequest]:
        router = await self.router_pubkey()
        quote_id = quote if isinstance(quote, str) else quote.quote.quote_id
        event = _payment_request(await self._post("/pay", pay_event(self.keys, router, quote_id)))
        return self._verified(event, quote, router, network)

    async def infer(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int = 256,
        **options: Any,
    ) -> VerifiedChain:
        router = await self.router_pubkey()
        event = self._infer_event(router, model, prompt, messages, max_tokens, options)
        return verify_chain(event, _answer_event(await self._post("/infer", event)), router)

    async def stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int = 256,
        **options: Any,
    ) -> AsyncStream:
        """`async with await client.stream(...) as s: async for delta in s: ...`, then `s.chain`."""
        router = await self.router_pubkey()
        event = self._infer_event(router, model, prompt, messages, max_tokens, {**options, "stream": True})
        return AsyncStream(
            self._http, self.router_url + "/infer/stream", event, router, self.stream_limits, explain=self._explain
        )

    async def status(self) -> dict[str, Any]:
        return _json(await self._get("/status", self._ops_headers("/status")))

    async def explain_route(self, model: str, **demand: Any) -> dict[str, Any]:
        path = "/route/explain?" + _explain_query(model, demand)
        return _json(await self._get(path, self._ops_headers(path)))

    async def peers(self) -> list[dict[str, Any]]:
        return _json_list(await self._get("/federation/peers", self._ops_headers("/federation/peers")))

    async def models(self) -> list[str]:
        return _model_ids(_json(await self._get("/v1/models")))

    async def payment_status(self, payment_id: str) -> dict[str, Any]:
        path = f"/payments/{payment_id}"
        return _json(await self._get(path, self._client_auth(path)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
