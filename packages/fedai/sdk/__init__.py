"""Client SDK: sign requests, call a router, verify the returned chain."""

from fedai.sdk.chain import ChainError, VerifiedChain, verify_chain
from fedai.sdk.client import AsyncClient, Client, Quote
from fedai.sdk.stream import DEFAULT_STREAM_LIMITS, AsyncStream, Stream, StreamVerifier
from fedai.service.stream_limits import StreamCapExceeded, StreamLimits

__all__ = [
    "DEFAULT_STREAM_LIMITS",
    "AsyncClient",
    "AsyncStream",
    "ChainError",
    "Client",
    "Quote",
    "Stream",
    "StreamCapExceeded",
    "StreamLimits",
    "StreamVerifier",
    "VerifiedChain",
    "verify_chain",
]
