"""Where the peer book's announcements come from: subscriptions on the router's relays to peers' announcements
(only the allowlist's, when there is one) and to the followed keys' contact lists, plus the book's upkeep
(mirroring the relay pool's refusals, pruning silent peers)."""

from __future__ import annotations

from typing import Any

import asyncpg

from fedai.nostr import RelayPool
from fedai.protocol.event import Event
from fedai_router.background import Background
from fedai_router.federation.announcements import ANNOUNCE_KINDS
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.policy import CONTACTS_KIND

REQUERY_EOSE_S = 10.0
POOL_STATS_S = 1.0
PRUNE_S = 60.0  # how often silent peers are pruned


async def feed_peers(book: PeerBook, relays: RelayPool, pool: asyncpg.Pool, background: Background) -> None:
    """Subscribe to peers' announcements (and the followed keys' contact lists) on the router's relays."""

    async def on_announcement(event: Event, relay: str) -> None:
        await book.handle(event, pool)

    async def requery(keys: frozenset[str]) -> None:
        """Ask again for announcements of keys a contact list now vouches for (refused when they came)."""
        sub = await relays.subscribe([{"kinds": ANNOUNCE_KINDS, "authors": sorted(keys)}], on_announcement)
        try:
            await sub.wait_eose(REQUERY_EOSE_S)
        finally:
            await sub.close()

    async def on_contacts(event: Event, relay: str) -> None:
        vouched = book.handle_contacts(event)
        if vouched:
            background.spawn(requery(vouched), "peer requery")

    policy = book.policy
    announcements: dict[str, Any] = {"kinds": ANNOUNCE_KINDS}
    if policy.allowlist:
        announcements["authors"] = sorted(policy.allowlist - policy.blocklist)
    if policy.follow:
        await relays.subscribe([{"kinds": [CONTACTS_KIND], "authors": sorted(policy.follow)}], on_contacts)
    await relays.subscribe([announcements], on_announcement)

    async def mirror() -> None:
        book.mirror_pool_stats(relays.stats)

    async def prune() -> None:
        await book.prune(pool)

    background.every(POOL_STATS_S, "peer stats", mirror)
    background.every(PRUNE_S, "peer prune", prune)
