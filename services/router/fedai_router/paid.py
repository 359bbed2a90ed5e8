"""A paid `/infer` on the router (docs/payments.md#the-flow): the proof checked the lean way (the router trusts
the payment request it stored when it issued it: sha256 of each preimage, then one atomic claim of every payee
that also binds the client and the quote), the request served only by the node that was paid, and the claim
consumed when it was served or released when it was not (the same proof serves a retry until expiry).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from fedai.protocol.event import Event
from fedai.protocol.messages import ForwardedPayment, InferenceRequest, PaymentProof
from fedai.protocol.payment import WORK_ROLES, PaymentRequired, claim_error, invalid, preimage_matches
from fedai.store.db import UNAVAILABLE
from fedai_router.payment_requests import PaymentRequests
from fedai_router.settlement import RouterSettlement
from fedai_router.store.payments import ClaimedPayee, Consumption, PaymentStore

log = logging.getLogger("fedai.router.payments")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Held:
    """A proof this request claimed: every payee of `request_id`, held by `claimant` until settled."""

    request_id: str
    claimant: str
    node: str  # the node the request was paid for: the only one that may serve it
    forwarded: ForwardedPayment  # what the node is sent: the payment request and its own preimage only
    fee: ClaimedPayee | None = None  # the router's own fee invoice, when it charges one

    def for_planning(self, request: InferenceRequest) -> InferenceRequest:
        """The request as the planner must see it: pinned to the paid node, nothing else (the client's own
        pins stay in what is forwarded, which the client's chain check compares with what it sent)."""
        return msgspec.structs.replace(request, nodes=[self.node], exclude_nodes=None, payment=None)

    @property
    def consumption(self) -> Consumption:
        """The claim, for the answer's metering record to consume (`Completion.answer`)."""
        return Consumption(self.request_id, self.claimant)

    def for_node(self, request: InferenceRequest) -> InferenceRequest:
        """The request as forwarded: the client's, with `forwarded_payment` in place of `payment`."""
        return msgspec.structs.replace(request, payment=None, forwarded_payment=self.forwarded)


class Paid:
    """The router's paid path. `required` (ROUTER_REQUIRE_PAYMENT): a request without payment is refused with
    402 and, when it names a quote, the payment request of that quote."""

    def __init__(self, store: PaymentStore, requests: PaymentRequests, *, required: bool, enabled: bool) -> None:
        self.store = store
        self.requests = requests
        self.required = required
        self.enabled = enabled  # a router wallet or ROUTER_REQUIRE_PAYMENT: this router takes payments
        self.settlement: RouterSettlement | None = None  # refunds of the unused fee (docs/payments.md#refunds)

    def applies(self, request: InferenceRequest) -> bool:
        return self.required or request.payment is not None

    async def hold(self, client: str, request: InferenceRequest) -> Held:
        """Check and claim the proof `request` carries, or refuse: 402 with the payment request when it carries
        none, `payment_invalid` / `payment_used` / `payment_expired` / `payment_in_use` as the claim says."""
        proof = request.payment
        if not self.enabled:
            raise invalid("this router takes no payment")
        if proof is None:
            if request.quote_id is None:
                raise PaymentRequired("this router serves paid requests: ask a quote (POST /quote), then pay it")
            event = await self.requests.for_quote(client, request.quote_id)
            raise PaymentRequired("pay this payment request, then send the request with its proof", event)
        if request.quote_id is None:
            raise invalid("a paid request names the quote it paid (quote_id)")
        if self.settlement is not None:
            self.settlement.check_destination(proof.refund_to)
        if not all(preimage_matches(pre, h) for h, pre in proof.preimages.items()):
            raise invalid("a preimage does not match its payment hash")
        claimant = secrets.token_hex(16)
        claim = await self.store.claim_all(
            list(proof.preimages), proof.payment_request, claimant, time.time(), client=client, quote=request.quote_id
        )
        if self.settlement is not None:
            self.settlement.count_claim(claim.outcome, claim.payees)
        error = claim_error(claim.outcome)
        if error is not None:
            raise error
        try:
            return self._held(proof.payment_request, claimant, claim.payees, claim.event, proof)
        except BaseException:
            await self._release(proof.payment_request, claimant)
            raise

    def _held(
        self,
        request_id: str,
        claimant: str,
        payees: tuple[ClaimedPayee, ...],
        event: Event | None,
        proof: PaymentProof,
    ) -> Held:
        """What a claimed proof binds the request to: the paid node, and what that node is forwarded (`event`,
        the stored payment request the claim returned)."""
        node = next(p for p in payees if p.role in WORK_ROLES)
        if event is None:
            raise invalid("payment request unknown here")
        preimage, refund_to = proof.preimages[node.payment_hash], proof.refund_to
        forwarded = ForwardedPayment(request=event, preimage=preimage, refund_to=refund_to)
        fee = next((p for p in payees if p.role == "router_fee"), None)
        return Held(request_id, claimant, node.payee, forwarded, fee)

    async def while_held(self, held: Held, work: Callable[[], Awaitable[T]], *, consume: bool = True) -> T:
        """Run `work` (plan, dispatch to the paid node) holding the claim: released when it failed; consumed once
        it succeeded, unless `consume` is False: then the caller consumes it with the answer's metering record
        (`held.consumption`) and calls `consumed`, or `release` when the answer failed."""
        try:
            result = await work()
        except BaseException:
            await self._release(held.request_id, held.claimant)
            self._count(held, "released")
            raise
        if consume:
            await self.store.consume(held.request_id, held.claimant)
            self.consumed(held)
        return result

    def consumed(self, held: Held) -> None:
        """The claim was consumed (here, or with the answer's metering record): counted."""
        self._count(held, "consumed")

    async def release(self, held: Held) -> None:
        """Give back the claim of a request that was not dispatched."""
        await self._release(held.request_id, held.claimant)
        self._count(held, "released")

    def _count(self, held: Held, outcome: str) -> None:
        if self.settlement is not None:
            self.settlement.count_proof(outcome, with_fee=held.fee is not None)

    async def _release(self, request_id: str, claimant: str) -> None:
        """Give the claim back; with the database down it stays held (logged) until `release_stale`."""
        try:
            await self.store.release(request_id, claimant)
        except UNAVAILABLE as exc:
            log.warning("payment claim not released: database unavailable", extra={"error": type(exc).__name__})
