"""Client SDK: sign requests, call a router, verify the returned chain. What it raises: `fedai.sdk.errors`."""

from fedai.sdk.chain import VerifiedChain, verify_chain
from fedai.sdk.client import AsyncClient, Client, Quote
from fedai.sdk.errors import (
    ChainError,
    ConnectionLost,
    FedaiClientError,
    InvalidRequest,
    Link,
    PaymentRequiredError,
    RouterError,
    RouterKeyMismatch,
    RouterTimeout,
    RouterUnreachable,
    StreamLimitExceeded,
    TransportError,
    UnexpectedResponse,
)
from fedai.sdk.stream import DEFAULT_STREAM_LIMITS, AsyncStream, Stream, StreamVerifier
from fedai.service.stream_limits import StreamCapExceeded, StreamLimits

__all__ = [
    "DEFAULT_STREAM_LIMITS",
    "AsyncClient",
    "AsyncStream",
    "ChainError",
    "Client",
    "ConnectionLost",
    "FedaiClientError",
    "InvalidRequest",
    "Link",
    "PaymentRequiredError",
    "Quote",
    "RouterError",
    "RouterKeyMismatch",
    "RouterTimeout",
    "RouterUnreachable",
    "Stream",
    "StreamCapExceeded",
    "StreamLimitExceeded",
    "StreamLimits",
    "StreamVerifier",
    "TransportError",
    "UnexpectedResponse",
    "VerifiedChain",
    "verify_chain",
]
