"""Learn nodes from `node.announce` events on relays; they stay unverified until a heartbeat or a good call.
Announcements meet the same registry bounds as heartbeats, with the relay as the source whose rate of new
registrations is limited (docs/security.md#registry)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fedai.nostr import RelayPool
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, decode_payload
from fedai_router.admission import check_descriptor, check_size
from fedai_router.config import RegistryLimits
from fedai_router.endpoints import EndpointValidator
from fedai_router.index import RegistryRefusal
from fedai_router.registry import Registry

log = logging.getLogger("fedai.router.discovery")

ANNOUNCE_D_TAG = "fedai-node"


@dataclass(frozen=True)
class Discovery:
    registry: Registry
    endpoints: EndpointValidator
    limits: RegistryLimits

    async def subscribe(self, relays: RelayPool) -> None:
        """Take every node announcement the relays carry."""

        async def on_announce(event: Event, relay: str) -> None:
            await self.handle_announce(event, relay)

        await relays.subscribe([{"kinds": [int(Kind.NODE_ANNOUNCE)], "#d": [ANNOUNCE_D_TAG]}], on_announce)

    async def handle_announce(self, event: Event, relay: str) -> bool:
        """Add or refresh an announced node (the relay pool has already verified id and signature); `relay` is the
        URL it came from. False, with nothing stored, if a bound or a check refused it."""
        if event.kind != Kind.NODE_ANNOUNCE or event.tag("d") != ANNOUNCE_D_TAG:
            return False
        try:
            stored = await self._admit(event, relay)
        except RegistryRefusal as err:  # counted and logged (at debug: floods) by the registry
            self.registry.refused("announce", err)
            return False
        except FedaiError as err:
            log.info("announcement refused", extra={"node": event.pubkey[:16], "code": err.code.value})
            return False
        if stored:
            log.info("node discovered on relay", extra={"node": event.pubkey[:16]})
        return stored

    async def _admit(self, event: Event, relay: str) -> bool:
        """The registry bounds (as for heartbeats, with the relay as the source), the endpoint check, then store."""
        registry, limits = self.registry, self.limits
        check_size(len(event.content.encode()), limits)
        descriptor = decode_payload(event.content, NodeDescriptor)
        check_descriptor(descriptor, limits)
        registry.admit(event.pubkey, descriptor, verified=False, relay=relay)
        await self.endpoints.check(descriptor.endpoint)
        async with registry.registering(event.pubkey, descriptor, verified=False):
            return await registry.record_announce(event.pubkey, descriptor)
