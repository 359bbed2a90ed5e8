"""Admission: the checks every signed router request passes before the node does any work.

In order: the body's size, the envelope (signature, a trusted router's key, addressed to this node, fresh),
then for inference the node's readiness, its limits and a capacity slot, and last the replay claim.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any

import msgspec
from prometheus_client import Gauge
from starlette.requests import Request

from fedai.protocol.envelope import Opened, P, open_envelope
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.protocol.replay import MemoryReplayGuard, ReplayGuard, claim_or_raise
from fedai.service.http import read_body
from fedai_node.catalog import NOT_READY_RETRY_MS, ModelCatalog
from fedai_node.limits import InFlight, Limits, check_request
from fedai_node.prices import NodePrices
from fedai_node.serving import Admitted

_INFER_KINDS = frozenset({Kind.INFER_REQUEST})


class Admission:
    """Opens router envelopes, claims their ids, and admits inference requests into a capacity slot.

    `guard` is in memory until the node's start replaces it with the Postgres one (`NODE_DB_URL`).
    """

    def __init__(
        self,
        *,
        pubkey: str,
        routers: Collection[str],
        max_request_bytes: int,
        skew_s: int,
        catalog: ModelCatalog,
        limits: Limits,
        capacity: int,
        in_flight_gauge: Gauge,
        prices: NodePrices | None = None,
    ) -> None:
        self._pubkey = pubkey
        self._routers = routers
        self._max_bytes = max_request_bytes
        self._skew_s = skew_s
        self._catalog = catalog
        self._limits = limits
        self._gauge = in_flight_gauge
        self.in_flight = InFlight(capacity)
        self.guard: ReplayGuard = MemoryReplayGuard()
        self._prices = prices  # what an admitted request is charged, fixed when it is admitted

    async def open(self, request: Request, cls: type[P], kinds: Collection[int]) -> tuple[Opened[P], int]:
        """The request's envelope, checked, and its size in bytes. Raises `FedaiError`."""
        body = await read_body(request, self._max_bytes)
        opened = open_envelope(
            body,
            cls,
            kinds=kinds,
            recipient=self._pubkey,
            signers=self._routers,
            max_bytes=self._max_bytes,
            skew_s=self._skew_s,
        )
        return opened, len(body)

    async def claim(self, event: Event) -> None:
        """Accept `event`'s id once. Raises `FedaiError` (`replay`) for an id seen before."""
        await claim_or_raise(self.guard, event, self._skew_s)

    async def admit(
        self, request: Request, started: float, fields: MutableMapping[str, Any], *, streaming: bool
    ) -> Admitted:
        """Envelope, readiness, limits, capacity slot, then the replay claim. Raises `FedaiError`; on success the
        caller owns one capacity slot (`release` it)."""
        opened, size = await self.open(request, InferenceRequest, _INFER_KINDS)
        fields.update(request=opened.event.id[:12], model=opened.payload.model)
        if not self._catalog.ready:
            raise FedaiError(
                ErrorCode.NO_CAPACITY, "node is not ready: its runner is down or loading", NOT_READY_RETRY_MS
            )
        model = check_request(opened.payload, self._catalog.models, self._limits, streaming=streaming)
        req = opened.payload
        if req.model != model.id:
            req = msgspec.structs.replace(req, model=model.id)
        # Take the slot before claiming the id, so a request refused for capacity can be sent again as is.
        self.acquire()
        try:
            await self.claim(opened.event)
        except BaseException:
            self.release()
            raise
        pricing = None if self._prices is None else self._prices.charged(model.id)
        return Admitted(opened.event, req, size, started, pricing)

    def acquire(self) -> None:
        self.in_flight.acquire()
        self._gauge.set(self.in_flight.count)

    def release(self) -> None:
        self.in_flight.release()
        self._gauge.set(self.in_flight.count)
