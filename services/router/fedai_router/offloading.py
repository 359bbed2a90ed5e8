"""What the request path may ask of federation: whether a request may leave this router, and to serve it
through a peer. `fedai_router.federation` implements it; the request path knows only this."""

from __future__ import annotations

from typing import Protocol

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.messages import InferenceRequest

OFFLOADABLE = (ErrorCode.UNKNOWN_MODEL, ErrorCode.NO_CAPACITY)  # no node of ours fits, or all are busy


class Offloader(Protocol):
    def can_offload(self, request: InferenceRequest) -> bool:
        """Federation is on and `request` may leave this router (privacy)."""
        ...

    async def offload(self, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
        """Serve `request` through a peer and answer the client; raise `local` (why we could not serve it
        ourselves) if no peer can."""
        ...
