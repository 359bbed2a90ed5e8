"""The one way out: every call from the router to a node or a peer router goes through `Outbound`.

What it guarantees, in one place:
- **The address connected to is checked.** The connector's socket factory judges, with `is_public_address`,
  every address aiohttp is about to connect to (names after resolution, and IP literals, which aiohttp
  connects to without asking the resolver) and refuses the connection unless ROUTER_ALLOW_PRIVATE_ENDPOINTS
  is on. A name that resolved to a public address when the node registered and to 127.0.0.1 now (DNS
  rebinding) is refused here, whatever was cached at heartbeat time.
- **Resolution is bounded** (`fedai_router.resolver`): its own threads, a concurrency limit and a timeout.
- **Redirects are never followed**: every request is sent with `allow_redirects=False`, and a 3xx answer is an
  upstream failure (a 307/308 would otherwise replay the signed POST body to wherever it points).
- **The trace goes along** (docs/observability.md): each call is a client span, and its `traceparent` rides in an
  HTTP header, outside the signed event.
- **Failures reach clients generic**: "the node could not be reached", never the upstream's HTTP status, its
  address, or the resolver's words. The detail goes to the router's log (info) and to
  `fedai_router_outbound_failures_total{target, reason}`, whose labels are a fixed set. An upstream's typed error
  answer is passed on as that error (`error_from_reply`); anything else it answers is a generic `upstream_error`.
  This module is the one place where what happened on the way out becomes a `FedaiError`.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp.connector import AddrInfoType, SocketFactoryType
from prometheus_client import Counter

from fedai.observability.tracing import annotate, inject, span
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.jsonguard import decode_json
from fedai.service.client import PeerReply, ReplyTooLarge, read_limited
from fedai.service.sse import SSEError
from fedai_router.endpoints import is_public_address
from fedai_router.resolver import BoundedResolver, ResolveTimeout
from fedai_router.verify import NodeFault

log = logging.getLogger("fedai.router.outbound")

Target = Literal["node", "peer"]
WHO: dict[str, str] = {"node": "node", "peer": "provider"}
SPAN: dict[str, str] = {"node": "router.node_call", "peer": "router.peer_call"}
JSON_HEADERS = {"Content-Type": "application/json"}
STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
DNS_CACHE_S = 10  # aiohttp keeps resolved (and so already judged at connect) addresses this long
MAX_ERROR_BODY_BYTES = 64 * 1024  # read of a streamed call's non-200 answer


class AddressRefused(OSError):
    """The connector refused to connect to a non-public address. Every instance has the same text, so that
    happy eyeballs, refusing several addresses of one name, re-raises this type rather than a plain OSError."""

    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, "connection to a non-public address refused")
        self.address = address


class Redirected(Exception):
    """The upstream answered 3xx: not followed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def guarded_socket_factory(allow_private: bool) -> SocketFactoryType:
    """aiohttp's socket factory, called with each address right before connecting to it."""

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if not allow_private and not is_public_address(address):
            raise AddressRefused(address)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def classify(exc: BaseException) -> tuple[str, str]:
    """(metric reason, log detail) for a failed call. The reason is one of a fixed set."""
    if isinstance(exc, Redirected):
        return "redirect", f"HTTP {exc.status}"
    if isinstance(exc, ReplyTooLarge):
        return "too_large", str(exc)
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, AddressRefused):
        return "address_refused", cause.address
    if isinstance(cause, ResolveTimeout):
        return "dns_timeout", "resolution timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error", type(exc.os_error).__name__
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors
        return "timeout", type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error", type(exc.os_error).__name__
    return "transport_error", type(exc).__name__


def error_from_reply(status: int, body: bytes, retry_after: str | None, who: str = "node") -> FedaiError:
    """A node's (or peer's) typed error answer, or a generic `upstream_error` if it is not one: the upstream's
    HTTP status is not repeated to the client (that would make the router a probe); the router logs it."""
    try:
        data = decode_json(body)
    except FedaiError:  # not JSON, or nested past the depth bound
        data = None
    inner = data.get("error") if isinstance(data, dict) else None
    if isinstance(inner, dict) and inner.get("code") in ErrorCode._value2member_map_:
        err = FedaiError.from_dict(data)
    else:
        log.info("unrecognised upstream answer", extra={"who": who, "status": status})
        err = FedaiError(ErrorCode.UPSTREAM_ERROR, f"the {who} gave an unrecognised answer")
    if err.retry_after_ms is None and retry_after and retry_after.isdigit():
        err.retry_after_ms = int(retry_after) * 1000
    return err


def status_reason(status: int) -> str:
    return f"http_{status // 100}xx" if 100 <= status <= 599 else "http_other"


class Outbound:
    """The router's one HTTP client session for nodes and peers (one per process, pooled keep-alive)."""

    def __init__(self, resolver: BoundedResolver, failures: Counter, *, allow_private: bool) -> None:
        self.resolver = resolver
        self.failures = failures
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=256,
            keepalive_timeout=30,
            resolver=self.resolver,
            ttl_dns_cache=DNS_CACHE_S,
            socket_factory=guarded_socket_factory(self.allow_private),
        )
        # trust_env=False: no proxy from the environment, so the connection made is the one judged
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.resolver.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Outbound.start() not called"
        return self._session

    async def post_event(
        self, url: str, event: Event, *, target: Target, client_timeout: aiohttp.ClientTimeout, limit: int
    ) -> PeerReply:
        """POST a signed event and read the whole (bounded) reply. A non-200 reply is returned for the caller to
        read as a typed error; transport failures, 3xx and oversized replies raise a generic `FedaiError`."""
        with span(SPAN[target], kind="client"):
            try:
                async with self.session.post(
                    url,
                    data=event.to_json(),
                    headers=inject(JSON_HEADERS),
                    timeout=client_timeout,
                    allow_redirects=False,
                ) as resp:
                    annotate({"http.response.status_code": resp.status})
                    self._check_status(resp.status, target)
                    return PeerReply(resp.status, await read_limited(resp, limit), resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, ReplyTooLarge, Redirected) as exc:
                raise self.failure(target, exc, url) from None

    async def exchange(
        self, url: str, event: Event, *, target: Target, client_timeout: aiohttp.ClientTimeout, limit: int
    ) -> bytes:
        """POST a signed event and return the body of a 200 answer; any other answer raises the upstream's typed
        error (`error_from_reply`), a failed call the generic one (`failure`)."""
        reply = await self.post_event(url, event, target=target, client_timeout=client_timeout, limit=limit)
        if reply.status != 200:
            raise error_from_reply(reply.status, reply.body, reply.retry_after, WHO[target])
        return reply.body

    async def open_stream(
        self, url: str, body: bytes, *, target: Target, client_timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """POST and return a 200 response once its headers are in (the caller reads and closes it). Any other
        answer raises the upstream's typed error, a failed call the generic one."""
        try:
            with span(SPAN[target], {"fedai.stream": True}, kind="client"):  # up to the answer's headers
                resp = await self.session.post(
                    url, data=body, headers=inject(STREAM_HEADERS), timeout=client_timeout, allow_redirects=False
                )
                annotate({"http.response.status_code": resp.status})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.failure(target, exc, url) from None
        try:
            self._check_status(resp.status, target)
        except Redirected as exc:
            resp.close()
            raise self.failure(target, exc, url) from None
        if resp.status != 200:
            try:
                answer = await resp.content.read(MAX_ERROR_BODY_BYTES)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self.failure(target, exc) from None
            finally:
                resp.close()
            raise error_from_reply(resp.status, answer, resp.headers.get("Retry-After"), WHO[target])
        return resp

    def stream_failure(self, target: Target, exc: BaseException) -> FedaiError:
        """A stream that broke or went silent: a malformed event stream is generic and not counted as a failed
        call; anything else is `failure`."""
        if isinstance(exc, SSEError):
            return FedaiError(ErrorCode.UPSTREAM_ERROR, f"{WHO[target]} stream broke")
        return self.failure(target, exc)

    def failure(self, target: Target, exc: BaseException, url: str | None = None) -> FedaiError:
        """The generic error for a failed call; the detail is logged and counted here."""
        reason, detail = classify(exc)
        self.failures.labels(target, reason).inc()
        host = urlsplit(url).hostname if url else None
        log.info("outbound call failed", extra={"target": target, "reason": reason, "host": host, "detail": detail})
        who = WHO[target]
        if reason in ("redirect", "too_large"):
            return NodeFault(f"the {who}'s answer was refused")
        if reason == "address_refused":  # quarantine, but tell the client no more than for any unreachable node
            return NodeFault(f"the {who} could not be reached")
        if reason in ("timeout", "dns_timeout"):
            return FedaiError(ErrorCode.UPSTREAM_TIMEOUT, f"the {who} did not answer in time")
        return FedaiError(ErrorCode.UPSTREAM_ERROR, f"the {who} could not be reached")

    def _check_status(self, status: int, target: Target) -> None:
        if 300 <= status < 400:
            raise Redirected(status)
        if status != 200:
            self.failures.labels(target, status_reason(status)).inc()
