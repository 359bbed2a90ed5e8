"""POST /infer/stream: the same request as /infer, answered as Server-Sent Events while the node generates.

Events to the client: `chunk` (a router-signed kind-21040 event, `e` = the client's request, content
`{seq, delta}`), then `done` (the router-signed infer.response with the whole verified chain, as /infer), or
`error` (`{"error": {code, message}}`). How the node's stream is relayed is `fedai_router.stream_relay`.

Every node stream is bounded (`ROUTER_STREAM_*`, fedai.service.stream_limits): total duration, idle time
(keep-alive comments are not activity), output bytes, chunks and bytes on the wire. Before the first chunk a
tripped bound is a node failure like a timeout (failover); after it, the client gets a typed `error` event and
the node is stopped and metered as on a disconnect.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
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
from fedai_router.planning import Planner
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
    ) -> None:
        self.keys = keys  # signs the chunks
        self.intake = intake
        self.planner = planner
        self.claims = claims
        self.relay = relay
        self.failures = failures
        self.metrics = metrics

    async def handle(self, request: Request) -> Response:
        """Check everything that depends only on the request (a plain HTTP error), then stream."""
        try:
            body = await read_body(request, self.intake.max_request_bytes)
            opened = self.intake.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
            client_event, payload = opened.event, opened.payload
            plan = await self.planner.plan(client_event.pubkey, payload)
            await self.planner.unless_served(plan.quote, lambda: self.claims.claim_locally(client_event))
        except Exception as exc:  # noqa: BLE001 - typed: FedaiError as is, a database outage 503, a bug 500
            return error_response(self.failures.refused(ROUTE, exc))
        origin = Origin(client_event.pubkey, client_event.id)
        self.metrics.requests.labels(ROUTE, "ok").inc()
        return self.relay.respond(origin, payload, plan, NativeSink(self.keys, origin), claim=client_event)
