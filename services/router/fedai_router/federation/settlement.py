"""Federation settlement, the provider's side (docs/federation.md#settlement): the provider router is the payee
of an offloaded job. It invoices the award's price from its own wallet (`POST /federation/invoice`, asked by the
awarded requester, the invoice bound to the award), and before running a submitted job it checks the proof: the
invoice is the one issued for this award, sha256(preimage) is its payment hash, and it is settled in its own
wallet for at least the bid's price. The job then starts once (awarded → running with that payment hash): a
proof cannot run a job twice, nor another award's job. Once it ran, its signed receipt states what it used of the
invoice (the receipt's price), what it refunds to the client's `refund_to` (carried in the submit's payment) from
this router's wallet, and what it keeps (`RouterSettlement`, role `provider`, retried by the reconciliation).
"""

from __future__ import annotations

import hashlib
import math
import time

import asyncpg

from fedai.payments.errors import InvalidInvoice, WalletUnavailable
from fedai.payments.invoice import check_invoice
from fedai.payments.wallet import InvoiceState, Wallet
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import SETTLEMENT_LIGHTNING, SETTLEMENT_NONE, JobSubmit
from fedai.protocol.keys import Keys
from fedai.protocol.messages import InvoiceRequest, PayeeInvoice, Settlement
from fedai.protocol.payment import PaymentRequired, invalid, preimage_matches, seal_invoice
from fedai_router.settlement import RouterSettlement
from fedai_router.store import federation_payments as paid_jobs
from fedai_router.store.federation import AwardRow

MIN_INVOICE_TTL_S = 10
MAX_INVOICE_TTL_S = 3600


def settlement_methods(*, wallet: bool, required: bool) -> list[str]:
    """What a router announces in its caps: Lightning with a wallet, unpaid jobs unless it requires payment."""
    methods = [SETTLEMENT_LIGHTNING] if wallet else []
    if not required:
        methods.append(SETTLEMENT_NONE)
    return methods


def award_invoice_key(provider: str, award: str, amount_msat: int) -> str:
    """The wallet's idempotency key of an award's invoice: asking again answers the same invoice."""
    binding = f"fedai-award|{provider}|{award}|{amount_msat}"
    return "fedai-" + hashlib.sha256(binding.encode()).hexdigest()


def invoice_refusal(award: AwardRow | None, sender: str, ask: InvoiceRequest, now: float) -> FedaiError | None:
    """Why `sender` may not have an invoice for `ask`'s award, or None. Pure."""
    if award is None or award.role != "provider" or award.peer != sender or ask.router != sender:
        return FedaiError(ErrorCode.FORBIDDEN, "no award of this router matches this invoice request and sender")
    if award.status != "awarded":
        return FedaiError(ErrorCode.FORBIDDEN, f"this award's job is {award.status}: it takes no invoice now")
    if award.terms is None or now * 1000 > award.terms.deadline_ms:
        return FedaiError(ErrorCode.EXPIRED, "the award's deadline has passed")
    if ask.amount_msat != award.price_msat:
        return FedaiError(ErrorCode.INVALID_REQUEST, "an award is invoiced for its price, no more and no less")
    return None


class ProviderSettlement:
    """Invoices awards from this router's own wallet (`ROUTER_WALLET`) and checks the proofs of paid jobs.
    `required` (`ROUTER_REQUIRE_PAYMENT`): a job without a proof is refused with 402."""

    def __init__(
        self,
        keys: Keys,
        pool: asyncpg.Pool,
        wallet: Wallet | None,
        *,
        network: str,
        required: bool,
        refunds: RouterSettlement | None = None,
    ):
        self.keys = keys
        self.pool = pool  # federation_jobs
        self.wallet = wallet
        self.network = network
        self.required = required
        self.refunds = refunds  # statements and refunds of paid jobs (None: a paid job states nothing)

    def methods(self) -> list[str]:
        return settlement_methods(wallet=self.wallet is not None, required=self.required)

    async def invoice(self, sender: str, ask: InvoiceRequest, award: AwardRow | None) -> Event:
        """Our signed payment.invoice (role `provider`, bound to the award) for the award's price."""
        if self.wallet is None:
            raise FedaiError(ErrorCode.NOT_FOUND, "this router takes no payment for jobs (no ROUTER_WALLET)")
        now = time.time()
        refusal = invoice_refusal(award, sender, ask, now)
        if refusal is not None:
            raise refusal
        assert award is not None and award.terms is not None
        deadline_s = award.terms.deadline_ms // 1000
        ttl = min(ask.expires_at, deadline_s) - math.ceil(now)
        if not MIN_INVOICE_TTL_S <= ttl <= MAX_INVOICE_TTL_S:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "invoice request expires too soon or too far ahead")
        key = award_invoice_key(self.keys.pubkey, award.award_id, award.price_msat)
        made = await self.wallet.create_invoice(award.price_msat, f"fedai job {award.job_id}", ttl, key)
        try:
            check_invoice(
                made.bolt11,
                amount_msat=award.price_msat,
                network=self.network,
                now=now,
                payment_hash=made.payment_hash,
                min_expiry_s=MIN_INVOICE_TTL_S - 1,
            )
        except InvalidInvoice as err:  # our own wallet answered an unusable invoice: never signed
            reason = f"the router's wallet answered an invoice that fails a check ({err.reason})"
            raise WalletUnavailable(reason) from None
        if await paid_jobs.bind_invoice(self.pool, award.job_id, made.payment_hash) != made.payment_hash:
            raise FedaiError(ErrorCode.FORBIDDEN, "another invoice is bound to this award")
        payload = PayeeInvoice(
            role="provider",
            quote=ask.quote,
            client=ask.client,
            router=sender,
            amount_msat=award.price_msat,
            payment_hash=made.payment_hash,
            bolt11=made.bolt11,
            expires_at=min(made.expires_at, ask.expires_at, deadline_s),
            award=award.award_id,
        )
        return seal_invoice(self.keys, payload)

    async def verify(self, award: AwardRow, submit: JobSubmit) -> str | None:
        """The payment hash a paid submit proves paid (then claimed by `start`), or None for an unpaid job this
        router takes; refusals are 402 `payment_required` / `payment_invalid`."""
        proof = submit.payment
        if proof is None:
            if self.required:
                raise PaymentRequired("this router runs paid jobs only: ask /federation/invoice for the award, pay it")
            return None
        if self.wallet is None:
            raise invalid("this router takes no payment for jobs")
        if self.refunds is not None:  # a bad destination is refused before anything is claimed
            self.refunds.check_destination(proof.refund_to)
        bound = await paid_jobs.invoice_of(self.pool, award.job_id)
        if bound is None or proof.payment_hash != bound:
            raise invalid("the proof is not for the invoice issued for this award")
        if not preimage_matches(proof.preimage, proof.payment_hash):
            raise invalid("preimage does not match the award's payment hash")
        status = await self.wallet.lookup_invoice(proof.payment_hash)
        if status.state is not InvoiceState.PAID or status.amount_msat < award.price_msat:
            raise invalid("the award's invoice is not settled in this router's wallet for its price")
        return proof.payment_hash

    async def start(self, job_id: str, payment_hash: str) -> None:
        """Claim the paid job single-use: awarded → running for this payment hash, or the typed refusal."""
        if await paid_jobs.start_paid_job(self.pool, job_id, payment_hash):
            return
        status = await paid_jobs.job_status(self.pool, job_id)
        if status == "running":
            raise FedaiError(ErrorCode.PAYMENT_IN_USE, "this payment is in use by a job in flight", 1000)
        raise FedaiError(ErrorCode.PAYMENT_USED, "this payment was already used for this award's job")

    async def release(self, job_id: str) -> None:
        await paid_jobs.release_paid_job(self.pool, job_id)

    def statement(
        self, payment_hash: str | None, paid_msat: int, price_msat: int, refund_to: str | None
    ) -> Settlement | None:
        """What our receipt states of a paid job's invoice (`paid_msat`, the award's price) once it ran at
        `price_msat`; None for an unpaid job."""
        if payment_hash is None or self.refunds is None:
            return None
        return self.refunds.provider_statement(payment_hash, paid_msat, price_msat, refund_to)

    async def after_job(self, statement: Settlement | None, refund_to: str | None) -> None:
        """The job's result is signed: keep our statement, open the refund it owes, pay it in the background."""
        if statement is not None and self.refunds is not None:
            await self.refunds.after_provided(statement, refund_to)
