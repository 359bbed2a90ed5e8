"""Nostr relay access: a verifying, reconnecting client pool, filter helpers and the embedded relay.

`pool` (several relays: subscribe, publish, check every event), `relay` (one relay's connection: reconnect,
OK, NIP-42), `subscription` (delivery, de-duplication, EOSE), `frames` (relay messages on the wire), `limits`
(bounded memory against untrusted relays), `filters`, and `local_relay` + `relay_server` (the embedded relay).
"""

from __future__ import annotations

from fedai.nostr.filters import build_filter, matches, matches_any
from fedai.nostr.local_relay import LocalRelayHandle, start_local_relay
from fedai.nostr.pool import RelayPool
from fedai.nostr.relay import PublishResult
from fedai.nostr.subscription import EventHandler, Subscription

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
