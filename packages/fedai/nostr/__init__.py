"""Nostr relay access: a verifying, reconnecting client pool, filter helpers and the embedded relay."""

from __future__ import annotations

from fedai.nostr.filters import build_filter, matches, matches_any
from fedai.nostr.local_relay import LocalRelayHandle, start_local_relay
from fedai.nostr.pool import EventHandler, PublishResult, RelayPool, Subscription

__all__ = [
    "EventHandler",
    "LocalRelayHandle",
    "PublishResult",
    "RelayPool",
    "Subscription",
    "build_filter",
    "matches",
    "matches_any",
    "start_local_relay",
]
