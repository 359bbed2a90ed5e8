"""Reading peers' HTTP answers (aiohttp) without trusting their size."""

from __future__ import annotations

import aiohttp


class ReplyTooLarge(Exception):
    """A peer's reply exceeded the size we accept."""


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole response body, refusing anything over `limit` bytes before holding it all."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ReplyTooLarge(f"reply is {resp.content_length} bytes, limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise ReplyTooLarge(f"reply exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
