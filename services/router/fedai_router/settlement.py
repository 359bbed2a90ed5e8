"""The router's usage-based settlement (docs/payments.md#refunds): after a paid answer it states, in its signed
infer.response, what it used of the fee it was paid (its fee formula on the node's metered price, or on the
provider's for an offloaded job) and refunds the rest to the client's `refund_to` from its own wallet, unless that
is dust (ROUTER_REFUND_DUST_MSAT). As a provider paid for a peer's job it does the same with its invoice (role
`provider`: used = its receipt's price), stated in its signed receipt. Refunds are opened before the answer
leaves, paid in the background, retried by the reconciliation job."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import asyncpg
from prometheus_client import Counter

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.payments.destination import DestinationInvoices
from fedai.payments.refund import fee_used, parse_destination, settle_share
from fedai.payments.wallet import Wallet
from fedai.protocol.event import Event
from fedai.protocol.federation import Receipt
from fedai.protocol.messages import ForwardedPayment, InferResult, MeteringRecord, Settlement, decode_payload
from fedai.protocol.payment import ClaimOutcome, invalid, preimage_matches
from fedai.refunder import Refunder, RefundPolicy
from fedai.store.refunds import RefundStore
from fedai_router.background import Background
from fedai_router.completion import Completion, Metered, Origin
from fedai_router.outbound import Outbound
from fedai_router.pricing import Fees
from fedai_router.reconcile import Reconciler
from fedai_router.refunds import outbound_fetch
from fedai_router.settlement_settings import SettlementSettings
from fedai_router.store.payments import ClaimedPayee
from fedai_router.store.settlements import record_settlements

log = logging.getLogger("fedai.router.settlement")


def node_statement(record: MeteringRecord, preimage: str) -> Settlement | None:
    """The node's statement in its metering record, if it names the node's own invoice (the one `preimage` pays);
    anything else is not kept (the SDK refuses such a chain anyway)."""
    stated = record.settlement
    if stated is None or stated.role != "node":
        return None
    if not preimage_matches(preimage, stated.payment_hash):
        return None
    return stated


class RouterSettlement:
    def __init__(
        self,
        pool: asyncpg.Pool,
        wallet: Wallet | None,
        outbound: Outbound,
        metrics: PaymentMetrics,
        settings: SettlementSettings,
        *,
        fee: Fees,  # the fee in force (the admin API's, else ROUTER_FEE_*), read at each statement
        network: str,
        allow_http: bool,
        background: Background,  # ROUTER_ALLOW_PRIVATE_ENDPOINTS: http destinations too (loopback tests)
    ) -> None:
        self.metrics = metrics
        self._pool = pool
        self._proof_children: dict[tuple[str, str], Counter] = {}
        self._earned = metrics.earned.labels("router_fee")  # children looked up once: the paid path counts each answer
        self._kept = metrics.refund_msat.labels("router_fee", "kept")
        self._settings = settings
        self._fee = fee
        self._allow_http = allow_http
        self._background = background
        self.refunder: Refunder | None = None  # the fee's refunds
        self.provider_refunder: Refunder | None = None  # refunds of invoices peers paid for jobs we ran
        if wallet is not None:
            invoices = DestinationInvoices(outbound_fetch(outbound), network=network, allow_http=allow_http)
            policy = RefundPolicy(settings.refund_max_fee_msat, settings.refund_max_attempts, allow_http)
            worker = f"router-{secrets.token_hex(6)}"
            store = RefundStore(pool)
            observe = metrics.observe_refund
            self.refunder = Refunder(
                store, wallet, invoices, role="router_fee", worker=worker, policy=policy, observe=observe
            )
            self.provider_refunder = Refunder(
                store, wallet, invoices, role="provider", worker=worker, policy=policy, observe=observe
            )
        refunders = tuple(r for r in (self.refunder, self.provider_refunder) if r is not None)
        self.reconciler = Reconciler(pool, metrics, settings, refunders)

    def _proofs(self, role: str, outcome: str) -> Counter:
        """The proofs counter's child for (role, outcome), looked up once (`labels` costs a lock and a tuple)."""
        child = self._proof_children.get((role, outcome))
        if child is None:
            child = self._proof_children[(role, outcome)] = self.metrics.proofs.labels(role, outcome)
        return child

    def count_claim(self, outcome: ClaimOutcome, payees: tuple[ClaimedPayee, ...]) -> None:
        """A proof's claim: `claimed` per payee's role, or the refusal (role `any`: nothing was claimed)."""
        if outcome is not ClaimOutcome.CLAIMED:
            self._proofs("any", str(outcome)).inc()
        for payee in payees:
            self._proofs(payee.role, "claimed").inc()

    def count_proof(self, outcome: str, *, with_fee: bool) -> None:
        """A held proof `consumed` (served) or `released` (the node failed), per payee's role."""
        self._proofs("node", outcome).inc()
        if with_fee:
            self._proofs("router_fee", outcome).inc()

    def check_destination(self, refund_to: str | None) -> None:
        """A paid request's `refund_to` is checked before its proof is claimed (400 `payment_invalid`)."""
        if refund_to is None:
            return
        try:
            parse_destination(refund_to, allow_http=self._allow_http)
        except ValueError as exc:
            raise invalid(str(exc)) from None

    def statement(self, fee: ClaimedPayee | None, record: MeteringRecord, refund_to: str | None) -> Settlement | None:
        """What the router states of its fee, once the node metered what it used."""
        return self.fee_statement(fee, record.price_msat, refund_to)

    def fee_statement(self, fee: ClaimedPayee | None, work_msat: int, refund_to: str | None) -> Settlement | None:
        """What the router states of its fee on work priced `work_msat` (the node's metered price, or the price a
        provider's receipt states for an offloaded job)."""
        if fee is None:
            return None
        base, ppm = self._fee.base_msat, self._fee.ppm
        used = fee_used(fee.amount_msat, work_msat, base_msat=base, ppm=ppm)
        refunding = refund_to is not None and self.refunder is not None
        return settle_share(
            "router_fee", fee.payment_hash, fee.amount_msat, used, self._settings.refund_dust_msat, refunding=refunding
        )

    async def after_answer(
        self, statement: Settlement | None, refund_to: str | None, node: Settlement | None = None
    ) -> None:
        """Keep both statements (the router's, the node's: `GET /payments/{id}` shows them), count what was earned
        and kept, open the refund, then pay it in the background."""
        stated = [s for s in (statement, node) if s is not None]
        if stated:
            await record_settlements(self._pool, stated)
        if statement is None:
            return
        self._earned.inc(statement.used_msat + statement.kept_msat)
        self._kept.inc(statement.kept_msat)
        if self.refunder is None or refund_to is None or statement.refund_msat == 0:
            return
        if await self.refunder.open(statement, refund_to):
            self.metrics.refund_msat.labels("router_fee", "refunded").inc(statement.refund_msat)
            self._background.spawn(self._attempt(statement.payment_hash), "refund")

    async def settled_answer(
        self, completion: Completion, origin: Origin, metered: Metered, fee: ClaimedPayee | None, paid: ForwardedPayment
    ) -> Event:
        """The signed answer of a paid request that was served (`/infer`, the OpenAI edge): the router's statement
        in it, both statements kept, the fee's refund opened."""
        statement = self.statement(fee, metered.record, paid.refund_to)
        answer = await completion.answer(origin, metered, settlement=statement)
        await self.after_answer(statement, paid.refund_to, node_statement(metered.record, paid.preimage))
        return answer

    async def return_fee(self, payment_hash: str, amount_msat: int, refund_to: str | None) -> None:
        """Our fee was paid for a call that will not be served (the OpenAI edge's bound wallet paid it, then failed
        to pay the work's invoice): state it unused and refund all of it, from our own wallet, like an unused part."""
        refunding = refund_to is not None and self.refunder is not None
        statement = settle_share("router_fee", payment_hash, amount_msat, 0, 0, refunding=refunding)
        await self.after_answer(statement, refund_to)

    def stating(self, fee: ClaimedPayee | None, refund_to: str | None) -> Callable[[int], Settlement | None]:
        """How a paid offload's answer states our fee, once the provider's receipt prices the work."""
        return lambda work_msat: self.fee_statement(fee, work_msat, refund_to)

    async def after_offload(self, answer: Event, refund_to: str | None) -> None:
        """A paid offload was answered (`answer`, signed by us: our fee's statement in it, the provider's in the
        receipt it carries, which we checked before signing): keep both, open our fee's refund."""
        result = decode_payload(answer.content, InferResult)
        provider = None
        if result.offload is not None:
            provider = decode_payload(result.offload.receipt.content, Receipt).settlement
        await self.after_answer(result.settlement, refund_to, provider)

    # -- the provider role (docs/federation.md#settlement) -----------------------------------------------------------

    def provider_statement(
        self, payment_hash: str, paid_msat: int, price_msat: int, refund_to: str | None
    ) -> Settlement:
        """What we state, in our receipt, of the invoice a peer paid for a job we ran: used = the receipt's price
        (at most the invoice), the rest refunded to the client's destination or kept (dust, or no destination)."""
        refunding = refund_to is not None and self.provider_refunder is not None
        dust = self._settings.refund_dust_msat
        return settle_share("provider", payment_hash, paid_msat, price_msat, dust, refunding=refunding)

    async def after_provided(self, statement: Settlement, refund_to: str | None) -> None:
        """Keep our statement, count what was earned and kept, open the refund, then pay it in the background."""
        await record_settlements(self._pool, [statement])
        self.metrics.earned.labels("provider").inc(statement.used_msat + statement.kept_msat)
        self.metrics.refund_msat.labels("provider", "kept").inc(statement.kept_msat)
        refunder = self.provider_refunder
        if refunder is None or refund_to is None or statement.refund_msat == 0:
            return
        if await refunder.open(statement, refund_to):
            self.metrics.refund_msat.labels("provider", "refunded").inc(statement.refund_msat)
            self._background.spawn(self._attempt(statement.payment_hash, refunder), "refund")

    async def _attempt(self, payment_hash: str, refunder: Refunder | None = None) -> None:
        refunder = refunder or self.refunder
        assert refunder is not None
        await refunder.attempt(payment_hash)
