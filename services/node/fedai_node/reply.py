"""Everything the node signs for a router: the reply (infer.response plus its metering record, the same for
`/infer` and a stream's `done`), each stream chunk, and the ACK of a cancel."""

from __future__ import annotations

import time

import msgspec

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    Ack,
    InferenceResponse,
    NodeReply,
    Pricing,
    Settlement,
    StreamChunk,
    Usage,
    price_msat,
)
from fedai_node.metering import build_record
from fedai_node.prices import NodePrices
from fedai_node.runners.base import RunnerResult
from fedai_node.serving import Admitted

_encode = msgspec.json.Encoder().encode


class ReplySigner:
    """Seals with the node's keys; every event is addressed (`p`) to the router and bound (`e`) to its request."""

    def __init__(self, keys: Keys, prices: NodePrices | Pricing) -> None:
        self._keys = keys
        self._prices = prices if isinstance(prices, NodePrices) else NodePrices(prices)

    def pricing(self, admitted: Admitted) -> Pricing:
        """The price `admitted` is charged: fixed at admission, else this node's for its model now."""
        return admitted.pricing or self._prices.charged(admitted.req.model)

    def reply(
        self,
        admitted: Admitted,
        result: RunnerResult,
        latency_ms: float,
        settlement: Settlement | None = None,
    ) -> bytes:
        """The node-signed infer.response and metering record for `result`, as `NodeReply` JSON; a paid request's
        record states its `settlement`."""
        event, req = admitted.event, admitted.req
        answer = InferenceResponse(
            model=req.model,
            output=result.output,
            finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
            latency_ms=round(latency_ms, 3),
        )
        response = seal(self._keys, Kind.INFER_RESPONSE, answer, to=event.pubkey, reply_to=event.id)
        record = build_record(
            request=event,
            req=req,
            response=response,
            result=result,
            pricing=self.pricing(admitted),
            wall_ms=(time.perf_counter() - admitted.started) * 1000,
            bytes_in=admitted.bytes_in,
        )
        if settlement is not None:
            # a paid request is charged at most the share paid: the quote is a ceiling (docs/payments.md#refunds).
            # The router's quote estimates input tokens from the prompt's size; a tokenizer that counts more must
            # not turn a paid answer into a refused one, so the node bears the difference and says so.
            price = min(record.price_msat, settlement.quoted_msat)
            record = msgspec.structs.replace(record, price_msat=price, settlement=settlement)
        metering = seal(self._keys, Kind.METERING_RECORD, record, to=event.pubkey, reply_to=event.id)
        return _encode(NodeReply(response=response, metering=metering))

    def price(self, admitted: Admitted, result: RunnerResult) -> int:
        """What the metering record will charge for `result` (this node's pricing for the request)."""
        return price_msat(self.pricing(admitted), result.input_tokens, result.output_tokens)

    def chunk(self, admitted: Admitted, seq: int, delta: str) -> Event:
        """One stream.chunk: the `seq`-th delta of the stream answering `admitted`."""
        event = admitted.event
        return seal(
            self._keys, Kind.STREAM_CHUNK, StreamChunk(seq=seq, delta=delta), to=event.pubkey, reply_to=event.id
        )

    def ack(self, request: Event, detail: str) -> Event:
        """An ACK of the router's `request` (an infer.cancel)."""
        return seal(self._keys, Kind.ACK, Ack(detail=detail), to=request.pubkey, reply_to=request.id)
