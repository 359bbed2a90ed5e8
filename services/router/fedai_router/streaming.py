"""POST /infer/stream: the same request as /infer, answered as Server-Sent Events while the node generates.

Events to the client: `chunk` (a router-signed kind-21040 event, `e` = the client's request, content
`{seq, delta}`), then `done` (the router-signed infer.response with the whole verified chain, as /infer), or
`error` (`{"error": {code, message}}`). How the node's stream is relayed is `fedai_router.stream_relay`.

Every node stream is bounded (`ROUTER_STREAM_*`, fedai.service.stream_limits): total duration, idle time
(keep-alive comments are not activity), output bytes, chunks and bytes on the wire. Before the first chunk a
tripped bound is a node failure like a timeout (failover); after it, the client gets a typed `error` event and
the node is stopped and metered as on a disconnect.

Streams are not offloaded to peer routers: when federation could have served the same request sent to /infer,
the refusal says so (same code), rather than claiming no node anywhere serves the model.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, StreamChunk
from fedai.service.http import error_response, read_body
from fedai.service.sse import format_sse
from fedai_router.claims import Claims
from fedai_router.completion import Origin
from fedai_router.failure import Failures
from fedai_router.intake import Intake
from fedai_router.metrics import RouterMetrics
from fedai_router.offloading import OFFLOADABLE, Offloader
from fedai_router.paid import Paid
from fedai_router.planning import Plan, Planner
from fedai_router.stream_relay import StreamRelay
from fedai_router.verify import Verified

ROUTE = "infer_stream"


class NativeSink:
    """fedai's stream: router-signed `chunk` events, the signed chain as `done`, typed `error`."""

    def __init__(self, keys: Keys, origin: Origin) -> None:
        self.keys, self.origin = keys, origin

    def chunk(self, chunk: StreamChunk) -> bytes:
        out = seal(self.keys, Kind.STREAM_CHUNK, chunk, to=self.origin.client, reply_to=self.origin.id)
        return format_sse("chunk", out.to_json())

    def done(self, answer: Event, verified: Verified) -> bytes:
        return format_sse("done", answer.to_json())

    def error(self, err: FedaiError) -> bytes:
        return format_sse("error", msgspec.json.encode(err.to_dict()))


def not_offloaded(err: FedaiError, request: InferenceRequest) -> FedaiError:
    """`err` (no local node fits) for a stream a peer router might have served unstreamed: same code, saying so."""
    why = f"no local node serves model {request.model!r}" if err.code == ErrorCode.UNKNOWN_MODEL else err.message
    message = f"{why}; streamed requests are not offloaded to peer routers (send it without streaming)"
    return FedaiError(err.code, message, err.retry_after_ms)


class InferStream:
    def __init__(
        self,
        *,
        keys: Keys,
        intake: Intake,
        planner: Planner,
        claims: Claims,
        relay: StreamRelay,
        failures: Failures,
        metrics: RouterMetrics,
        offloader: Offloader,
        paid: Paid,
    ) -> None:
        self.keys = keys  # signs the chunks
        self.offloader = offloader  # only asked whether /infer could have offloaded the request
        self.intake = intake
        self.planner = planner
        self.claims = claims
        self.relay = relay
        self.failures = failures
        self.metrics = metrics
        self.paid = paid

    async def handle(self, request: Request) -> Response:
        """Check everything that depends only on the request (a plain HTTP error), then stream."""
        try:
            body = await read_body(request, self.intake.max_request_bytes)
            opened = self.intake.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
            client_event, payload = opened.event, opened.payload
            if self.paid.applies(payload):
                return await self._paid(client_event, payload)
            plan = await self._plan(client_event.pubkey, payload)
            await self.planner.unless_served(plan.quote, lambda: self.claims.claim_locally(client_event))
        except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
            return error_response(self.failures.refused(ROUTE, exc))
        origin = Origin(client_event.pubkey, client_event.id)
        self.metrics.requests.labels(ROUTE, "ok").inc()
        return self.relay.respond(origin, payload, plan, NativeSink(self.keys, origin), claim=client_event)

    async def _paid(self, client_event: Event, payload: InferenceRequest) -> Response:
        """A paid stream (docs/payments.md#paid-streams): the proof claimed before the stream starts (a refusal is
        a plain HTTP error: 402 with the payment request, `payment_invalid`, ...), served by the paid node only,
        the claim consumed once the node's stream opened and released when it did not."""
        held = await self.paid.hold(client_event.pubkey, payload)
        try:
            plan = await self.planner.plan(client_event.pubkey, held.for_planning(payload))
            await self.planner.unless_served(plan.quote, lambda: self.claims.claim_locally(client_event))
        except BaseException:
            await self.paid.release(held)
            raise
        origin = Origin(client_event.pubkey, client_event.id)
        self.metrics.requests.labels(ROUTE, "ok").inc()
        sink = NativeSink(self.keys, origin)
        return self.relay.respond(origin, held.for_node(payload), plan, sink, claim=client_event, held=held)

    async def _plan(self, client: str, request: InferenceRequest) -> Plan:
        try:
            return await self.planner.plan(client, request)
        except FedaiError as err:
            if err.code in OFFLOADABLE and self.offloader.can_offload(request):
                raise not_offloaded(err, request) from None
            raise
