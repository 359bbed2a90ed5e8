"""POST /register-node: a node's signed heartbeat. The node id is the signer; nobody registers another key."""

from __future__ import annotations

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, NodeDescriptor
from fedai_router.service import RouterService


async def handle_register(svc: RouterService, body: bytes) -> Event:
    opened = svc.open_addressed(body, NodeDescriptor, Kind.NODE_HEARTBEAT)
    event, descriptor = opened.event, opened.payload
    await svc.endpoints.check(descriptor.endpoint)
    await svc.claim(event)
    await svc.registry.record_heartbeat(event.pubkey, descriptor)
    return seal(svc.keys, Kind.ACK, Ack(status="ok", detail="registered"), to=event.pubkey, reply_to=event.id)
