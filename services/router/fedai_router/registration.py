"""POST /register-node: a node's signed heartbeat. The node id is the signer; nobody registers another key.

Before anything is claimed or stored: the descriptor's size and caps (`invalid_event`/`too_large` naming the
variable); for a registration (a new key, or new names) room in the registry (`capacity_exceeded`) and the
per-address and per-key registration rates (`rate_limited` with Retry-After); then the endpoint check. A
refusal of a signed heartbeat is logged for the operator (`fedai_router.refusals`: once per node and code a
minute)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, NodeDescriptor
from fedai_router.admission import check_descriptor, check_size
from fedai_router.claims import Claims
from fedai_router.config import RegistryLimits
from fedai_router.endpoints import EndpointValidator
from fedai_router.index import RegistryRefusal
from fedai_router.intake import Intake
from fedai_router.refusals import RefusalLog
from fedai_router.registry import Registry


@dataclass(frozen=True)
class Registration:
    keys: Keys  # signs the ack
    intake: Intake
    claims: Claims
    registry: Registry
    endpoints: EndpointValidator
    limits: RegistryLimits
    refusals: RefusalLog = field(default_factory=RefusalLog)

    async def handle(self, body: bytes, source: str) -> Event:
        """`source`: the caller's address (`fedai_router.address`, IPv6 grouped per /64), for the registration
        rate."""
        check_size(len(body), self.limits)
        opened = self.intake.open_addressed(body, NodeDescriptor, Kind.NODE_HEARTBEAT)
        event, descriptor = opened.event, opened.payload
        try:
            await self._register(event, descriptor, source)
        except FedaiError as err:  # the signer is known from here on: the operator hears why (rate-limited)
            if isinstance(err, RegistryRefusal):
                self.registry.refused("heartbeat", err)
            self.refusals.refused(event.pubkey, descriptor.endpoint, err)
            raise
        return seal(self.keys, Kind.ACK, Ack(status="ok", detail="registered"), to=event.pubkey, reply_to=event.id)

    async def _register(self, event: Event, descriptor: NodeDescriptor, source: str) -> None:
        registry = self.registry
        if event.pubkey in registry.banned:
            raise FedaiError(ErrorCode.FORBIDDEN, "this node is banned by the router's operator")
        check_descriptor(descriptor, self.limits)
        registry.admit(event.pubkey, descriptor, verified=True, address=source)
        await self.endpoints.check(descriptor.endpoint)
        async with registry.registering(event.pubkey, descriptor, verified=True):
            await self.claims.claim(event)
            await registry.record_heartbeat(event.pubkey, descriptor)
