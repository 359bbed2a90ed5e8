"""Client SDK: sign requests, call a router, verify the returned chain."""

from fedai.sdk.chain import ChainError, VerifiedChain, verify_chain
from fedai.sdk.client import AsyncClient, Client, Quote
from fedai.sdk.stream import AsyncStream, Stream, StreamVerifier

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "ChainError",
    "Client",
    "Quote",
    "Stream",
    "StreamVerifier",
    "VerifiedChain",
    "verify_chain",
]
