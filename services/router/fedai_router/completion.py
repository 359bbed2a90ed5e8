"""The one way a served request is completed: store the verified metering, count it, and sign the answer that
carries the whole chain for the client to check. Unary, streamed, offloaded and provided (federation) requests
all end here."""

from __future__ import annotations

from dataclasses import dataclass

from fedai.observability.tracing import span
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferResult, MeteringRecord, Offload, Settlement
from fedai_router.metrics import RouterMetrics
from fedai_router.store.metering import MeteringEntry, MeteringStore
from fedai_router.store.payments import Consumption


@dataclass(frozen=True, slots=True)
class Origin:
    """Whom a request is for: the client's key and the id of the event that asked (its signed request, the
    NIP-98 authorization of an OpenAI-style call, or a peer's job.submit)."""

    client: str
    id: str


@dataclass(frozen=True, slots=True)
class Metered:
    """A node's verified answer to a forwarded request: the chain and its metering."""

    node: str  # the node's pubkey
    forwarded: Event  # the router-signed request the node answered
    response: Event  # node-signed
    metering: Event  # node-signed
    record: MeteringRecord  # the metering's payload
    attempt: int = 1  # which node call (1 = first) produced it


class Completion:
    def __init__(self, keys: Keys, metering: MeteringStore, metrics: RouterMetrics) -> None:
        self.keys = keys
        self.metering = metering
        self.metrics = metrics

    async def record(self, origin: Origin, metered: Metered, consume: Consumption | None = None) -> None:
        """Store the verified metering for `origin` (consuming a paid request's claim, `consume`, in the same
        statement), then count its price and tokens."""
        record = metered.record
        with span("router.store", {"fedai.node": metered.node, "fedai.model": record.model}):
            await self.metering.record(
                MeteringEntry(
                    record=record,
                    event=metered.metering,
                    origin_id=origin.id,
                    client=origin.client,
                    node=metered.node,
                    attempt=metered.attempt,
                    consume=consume,
                )
            )
        self.metrics.metering_msat.inc(record.price_msat)
        self.metrics.tokens.labels("in").inc(record.input_tokens)
        self.metrics.tokens.labels("out").inc(record.output_tokens)

    async def answer(
        self,
        origin: Origin,
        metered: Metered,
        offload: Offload | None = None,
        settlement: Settlement | None = None,
        consume: Consumption | None = None,
    ) -> Event:
        """Record the metering (and consume `consume`), then sign the infer.response carrying the whole chain
        (and, for a request served by a peer router, the offload that proves it)."""
        await self.record(origin, metered, consume)
        result = InferResult(
            forwarded=metered.forwarded,
            response=metered.response,
            metering=metered.metering,
            node=metered.node,
            offload=offload,
            settlement=settlement,
        )
        return seal(self.keys, Kind.INFER_RESPONSE, result, to=origin.client, reply_to=origin.id)
