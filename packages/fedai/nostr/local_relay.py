"""The embedded relay: nostr-sdk's `LocalRelay` on loopback, for the devnet and tests.

Why this relay, and why pinned: docs/decisions.md#embedded-relay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Generous limits: the library's default (60 events a minute) breaks any real test or devnet at event 61.
DEFAULT_MAX_REQS = 1_000
DEFAULT_NOTES_PER_MINUTE = 1_000_000


@dataclass
class LocalRelayHandle:
    url: str
    relay: Any

    def shutdown(self) -> None:
        self.relay.shutdown()


async def start_local_relay(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    max_reqs: int = DEFAULT_MAX_REQS,
    notes_per_minute: int = DEFAULT_NOTES_PER_MINUTE,
) -> LocalRelayHandle:
    """Start an in-memory relay serving websockets on `host:port` (a free port when None)."""
    import nostr_sdk as ns

    builder = ns.LocalRelayBuilder().addr(host)
    if port:
        builder = builder.port(port)
    relay = builder.rate_limit(ns.RateLimit(max_reqs=max_reqs, notes_per_minute=notes_per_minute)).build()
    await relay.run()
    return LocalRelayHandle(url=str(await relay.url()), relay=relay)
