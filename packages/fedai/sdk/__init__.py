"""Client SDK: sign requests, call a router, verify the returned chain."""

from fedai.sdk.chain import ChainError, VerifiedChain, verify_chain
from fedai.sdk.client import AsyncClient, Client, Quote

__all__ = ["AsyncClient", "ChainError", "Client", "Quote", "VerifiedChain", "verify_chain"]
