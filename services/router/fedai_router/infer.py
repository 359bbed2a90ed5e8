"""POST /infer: open the client's envelope, plan (quote, ranking), dispatch to nodes with failover, complete
(store the verified metering, answer with the chain). A request no node of ours can take may be offloaded to a
peer router under the same price cap and quote."""

from __future__ import annotations

import msgspec

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai_router.claims import Claims
from fedai_router.completion import Completion, Origin
from fedai_router.dispatch import Dispatcher, Served
from fedai_router.intake import Intake
from fedai_router.offloading import OFFLOADABLE, Offloader
from fedai_router.paid import Held, Paid
from fedai_router.paid_offload import PaidOffload
from fedai_router.planning import Planner
from fedai_router.settlement import node_statement


class Infer:
    def __init__(
        self,
        *,
        intake: Intake,
        claims: Claims,
        planner: Planner,
        dispatcher: Dispatcher,
        completion: Completion,
        offloader: Offloader,
        paid: Paid,
        offload: PaidOffload | None = None,
    ) -> None:
        self.intake = intake
        self.claims = claims
        self.planner = planner
        self.dispatcher = dispatcher
        self.completion = completion
        self.offloader = offloader
        self.paid = paid
        self.offload = offload  # a paying router with federation: proofs paying a peer's quote

    async def handle(self, body: bytes) -> Event:
        opened = self.intake.open_client(body, InferenceRequest, Kind.INFER_REQUEST)
        client_event, request = opened.event, opened.payload
        if request.stream:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "stream=true is served on /infer/stream")
        if self.paid.applies(request):
            return await self._paid(client_event, request)
        try:
            plan = await self.planner.plan(client_event.pubkey, request)
        except FedaiError as err:
            # a peer router may serve it (docs/federation.md)
            if err.code not in OFFLOADABLE or not self.offloader.can_offload(request):
                raise
            return await self._offload(client_event, request, err)
        origin = Origin(client_event.pubkey, client_event.id)

        async def serve() -> Served:
            return await self.dispatcher.serve(origin, request, plan.candidates, limits=plan.limits)

        served = await self.planner.unless_served(plan.quote, lambda: self.claims.while_claiming(client_event, serve))
        return await self.completion.answer(origin, served.metered)

    async def _paid(self, client_event: Event, request: InferenceRequest) -> Event:
        """A paid request (docs/payments.md#the-flow): its proof claimed first, then served by the paid node only
        (or, for a quote a peer router won, by that provider: `_paid_offload`), the claim consumed or released with
        the outcome."""
        held = await self.paid.hold(client_event.pubkey, request)
        offloaded = await self._paid_offload(client_event, request, held)
        if offloaded is not None:
            return offloaded
        origin = Origin(client_event.pubkey, client_event.id)

        async def work() -> Served:
            plan = await self.planner.plan(client_event.pubkey, held.for_planning(request))

            async def serve() -> Served:
                forwarded = held.for_node(request)
                return await self.dispatcher.serve(origin, forwarded, plan.candidates, limits=plan.limits)

            return await self.planner.unless_served(plan.quote, lambda: self.claims.while_claiming(client_event, serve))

        # the claim is consumed by the answer's metering record (one statement), or released if the answer fails
        served = await self.paid.while_held(held, work, consume=False)
        settlement, refund_to = self.paid.settlement, held.forwarded.refund_to
        statement = None if settlement is None else settlement.statement(held.fee, served.metered.record, refund_to)
        try:
            answer = await self.completion.answer(
                origin, served.metered, settlement=statement, consume=held.consumption
            )
        except BaseException:
            await self.paid.release(held)
            raise
        self.paid.consumed(held)
        if settlement is not None:
            node = node_statement(served.metered.record, held.forwarded.preimage)
            await settlement.after_answer(statement, refund_to, node)
        return answer

    async def _paid_offload(self, client_event: Event, request: InferenceRequest, held: Held) -> Event | None:
        """A proof paying a peer router's quote (docs/payments.md#federation-settlement): the job submitted to
        that provider with its preimage, the claim consumed once it answered, released if it failed. None when
        the quote is a local node's."""
        offload = self.offload
        if offload is None or request.quote_id is None:
            return None
        try:
            job = await offload.for_payment(request.quote_id, held.request_id)
        except BaseException:
            await self.paid.release(held)
            raise
        if job is None:
            return None
        settlement, refund_to = self.paid.settlement, held.forwarded.refund_to
        fee_statement = None if settlement is None else settlement.stating(held.fee, refund_to)
        origin = Origin(client_event.pubkey, client_event.id)
        answer = await self.paid.while_held(
            held, lambda: offload.serve(origin, request, job, held.forwarded, fee_statement, client_event)
        )
        if settlement is not None:
            await settlement.after_offload(answer, refund_to)
        return answer

    async def _offload(self, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
        """Offload under the same price cap and quote as a local dispatch (the job sent strips the cap itself)."""
        cap, quote = await self.planner.agreed(client_event.pubkey, request)
        spent = await self.planner.spend(quote)
        capped = msgspec.structs.replace(request, max_price_msat=cap)

        async def run() -> Event:
            return await self.offloader.offload(client_event, capped, local)

        return await self.planner.unless_served(spent, lambda: self.claims.while_claiming(client_event, run))
