"""POST /register-node: a node's signed heartbeat. The node id is the signer; nobody registers another key."""

from __future__ import annotations

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, NodeDescriptor
from fedai_router.service import RouterService


async def handle_register(svc: RouterService, body: bytes) -> Event:
    settings = svc.settings
    opened = open_envelope(
        body,
        NodeDescriptor,
        kinds=(Kind.NODE_HEARTBEAT,),
        recipient=svc.pubkey,
        max_bytes=settings.max_request_bytes,
        skew_s=settings.clock_skew_s,
    )
    event, descriptor = opened.event, opened.payload
    svc.limiter.check(event.pubkey)
    await svc.endpoints.check(descriptor.endpoint)
    await svc.claim(event)
    await svc.registry.record_heartbeat(event.pubkey, descriptor)
    return seal(svc.keys, Kind.ACK, Ack(status="ok", detail="registered"), to=event.pubkey, reply_to=event.id)
