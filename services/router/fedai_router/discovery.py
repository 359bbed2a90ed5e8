"""Learn nodes from `node.announce` events on relays; they stay unverified until a heartbeat or a good call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, decode_payload

if TYPE_CHECKING:
    from fedai_router.service import RouterService

log = logging.getLogger("fedai.router.discovery")

ANNOUNCE_D_TAG = "fedai-node"


async def start_discovery(svc: RouterService) -> Any:
    from fedai.nostr import RelayPool

    pool = RelayPool(
        svc.settings.relays,
        auth_keys=svc.keys,
        max_event_bytes=svc.settings.max_request_bytes,
        author_budget=(svc.settings.peer_rate, 60.0),  # ROUTER_PEER_RATE: events per author and minute
    )
    await pool.start()

    async def on_announce(event: Event, relay: str) -> None:
        await handle_announce(svc, event)

    await pool.subscribe([{"kinds": [int(Kind.NODE_ANNOUNCE)], "#d": [ANNOUNCE_D_TAG]}], on_announce)
    return pool


async def handle_announce(svc: RouterService, event: Event) -> bool:
    """Add or refresh an announced node (the relay pool has already verified id and signature)."""
    if event.kind != Kind.NODE_ANNOUNCE or event.tag("d") != ANNOUNCE_D_TAG:
        return False
    try:
        descriptor = decode_payload(event.content, NodeDescriptor)
        await svc.endpoints.check(descriptor.endpoint)
    except FedaiError as err:
        log.info("announcement refused", extra={"node": event.pubkey[:16], "code": err.code.value})
        return False
    stored = await svc.registry.record_announce(event.pubkey, descriptor)
    if stored:
        log.info("node discovered on relay", extra={"node": event.pubkey[:16]})
    return stored
