"""Learn nodes from `node.announce` events on relays; they stay unverified until a heartbeat or a good call.
Announcements meet the same registry bounds as heartbeats, with the relay as the source whose rate of new
registrations is limited (docs/security.d/registry.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, decode_payload
from fedai_router.admission import check_descriptor, check_size
from fedai_router.index import RegistryRefusal

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
        await handle_announce(svc, event, relay)

    await pool.subscribe([{"kinds": [int(Kind.NODE_ANNOUNCE)], "#d": [ANNOUNCE_D_TAG]}], on_announce)
    return pool


async def handle_announce(svc: RouterService, event: Event, relay: str) -> bool:
    """Add or refresh an announced node (the relay pool has already verified id and signature); `relay` is the
    URL it came from. False, with nothing stored, if a bound or a check refused it."""
    if event.kind != Kind.NODE_ANNOUNCE or event.tag("d") != ANNOUNCE_D_TAG:
        return False
    try:
        stored = await _admit(svc, event, relay)
    except RegistryRefusal as err:  # counted and logged (at debug: floods) by the registry
        svc.registry.refused("announce", err)
        return False
    except FedaiError as err:
        log.info("announcement refused", extra={"node": event.pubkey[:16], "code": err.code.value})
        return False
    if stored:
        log.info("node discovered on relay", extra={"node": event.pubkey[:16]})
    return stored


async def _admit(svc: RouterService, event: Event, relay: str) -> bool:
    """The registry bounds (as for heartbeats, with the relay as the source), the endpoint check, then store."""
    registry, limits = svc.registry, svc.settings.registry_limits
    check_size(len(event.content.encode()), limits)
    descriptor = decode_payload(event.content, NodeDescriptor)
    check_descriptor(descriptor, limits)
    if registry.index.changes_names(event.pubkey, descriptor):
        registry.index.check_room(event.pubkey, descriptor, verified=False)
        registry.gate.check(event.pubkey, relay=relay)
    await svc.endpoints.check(descriptor.endpoint)
    async with registry.registering(event.pubkey, descriptor, verified=False):
        return await registry.record_announce(event.pubkey, descriptor)
