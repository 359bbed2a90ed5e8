"""Reading peers' HTTP answers (aiohttp) without trusting their size."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from fedai.protocol.event import Event


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


@dataclass(frozen=True, slots=True)
class PeerReply:
    status: int
    body: bytes
    retry_after: str | None


async def post_event(
    session: aiohttp.ClientSession, url: str, event: Event, *, client_timeout: aiohttp.ClientTimeout, limit: int
) -> PeerReply:
    """POST a signed event to a peer and read its whole (bounded) reply. Transport errors propagate."""
    async with session.post(
        url, data=event.to_json(), headers={"Content-Type": "application/json"}, timeout=client_timeout
    ) as resp:
        return PeerReply(resp.status, await read_limited(resp, limit), resp.headers.get("Retry-After"))
