"""Paying for an OpenAI caller on a paying router (docs/payments.md#the-openai-edge).

The router quotes the call for the caller's key and issues the quote's payment request, as `POST /pay` would.
A caller whose API key (or NIP-98 identity) is bound to its own wallet (`ROUTER_API_KEY_WALLETS`) has every
payee's invoice paid from that wallet, within the binding's budget (counted in Postgres, so it holds across
replicas), and the call goes on as a paid request with the preimages as its proof. Money moves from the
client's wallet to each payee's; the router only holds the permission to spend. A caller without a binding is
refused with 402 `payment_required` carrying the payment request. A paid call names the refund link of its
payment request as `refund_to` (`edge_refunds`: the unused part of each share goes back to the bound wallet).
A non-streamed call for a model only a peer router serves is quoted by an auction for its exact job, as `POST
/quote` does, and pays the provider's own invoice (docs/payments.md#federation-settlement); a streamed one is not
offloaded and keeps the local refusal, before anything is paid.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from fedai.payments.wallet import Wallet
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.messages import (
    InferenceRequest,
    PaymentProof,
    PaymentRequest,
    QuoteRequest,
    QuoteResponse,
    decode_payload,
)
from fedai.protocol.payment import PaymentRequired
from fedai_router.client_wallets import ClientWallets, WalletBinding
from fedai_router.openai_api.auth import Caller
from fedai_router.openai_api.edge_refunds import EdgeRefunds
from fedai_router.payment_requests import PaymentRequests
from fedai_router.store.budgets import give_back, reserve

log = logging.getLogger("fedai.router.payments")

IssueQuote = Callable[[str, str, QuoteRequest, bool], Awaitable[QuoteResponse]]  # (client, asking id, what, offload)
# the router gives back its own fee, paid for a call whose other invoices could not be: (payment hash, msat, to)
ReturnFee = Callable[[str, int, str | None], Awaitable[None]]
MAX_FEE_MSAT = 10_000  # routing fees a bound wallet may pay per invoice (reserved from the budget, unspent given back)


def quote_request(payload: InferenceRequest) -> QuoteRequest:
    """The call as a quote request, naming the whole job (a quote a peer prices binds exactly this job). Pure."""
    return QuoteRequest(
        model=payload.model,
        prompt=payload.prompt,
        messages=payload.messages,
        max_tokens=payload.max_tokens,
        job_type=payload.job_type,
        temperature=payload.temperature,
        top_p=payload.top_p,
        stop=payload.stop,
        privacy=payload.privacy,
    )


class EdgePayments:
    def __init__(
        self,
        *,
        issue: IssueQuote,
        requests: PaymentRequests,
        wallets: ClientWallets,
        pool: asyncpg.Pool,
        refunds: EdgeRefunds | None = None,
        return_fee: ReturnFee | None = None,
    ) -> None:
        self.issue = issue  # Quotes.issue: the router quotes the call for the caller
        self.requests = requests
        self.wallets = wallets
        self.pool = pool  # the budgets
        self.refunds = refunds  # the refund link each paid call names as its `refund_to` (edge_refunds.py)
        self.return_fee = return_fee  # RouterSettlement.return_fee: our own fee back, from our own wallet

    async def paid(self, caller: Caller, payload: InferenceRequest, asked: Event) -> InferenceRequest:
        """`payload` with its quote and the proof that it was paid from the caller's bound wallet; without a
        binding, 402 `payment_required` with the payment request; over budget, 402 `payment_refused`."""
        quote = await self.issue(caller.client, asked.id, quote_request(payload), not payload.stream)
        event = await self.requests.for_quote(caller.client, quote.quote_id)
        binding = self.wallets.binding(caller.api_key_sha256, caller.client)
        if binding is None:
            raise PaymentRequired(
                "this router serves paid requests: pay this payment request (fedai's /infer takes the proof), or "
                "ask the operator to bind your API key to your wallet (fedai apikey new --nwc)",
                event,
            )
        proof = await self._pay(binding, event)
        return msgspec.structs.replace(payload, quote_id=quote.quote_id, payment=proof)

    async def _pay(self, binding: WalletBinding, event: Event) -> PaymentProof:
        request = decode_payload(event.content, PaymentRequest)  # the router's own, checked when it was built
        refund_to = None if self.refunds is None else await self.refunds.link(event.id, binding, request.total_msat)
        allowance = request.total_msat + MAX_FEE_MSAT * len(request.payees)
        wallet = await self.wallets.wallet(binding)
        if not await reserve(self.pool, binding.id, allowance, binding.budget_msat):
            raise FedaiError(
                ErrorCode.PAYMENT_REFUSED,
                f"this call would take the budget bound to your key past {binding.budget_msat} msat "
                f"(it needs up to {allowance} msat); ask the operator for a larger budget",
            )
        tally, preimages = Tally(), dict[str, str]()
        try:
            await _pay_all(wallet, request, tally, preimages)
        except BaseException:
            await self._unfinished(event.id, request, preimages, refund_to)
            raise
        finally:
            await give_back(self.pool, binding.id, allowance - tally.msat)
        log.info("paid from a bound wallet", extra={"request": event.id[:16], "msat": tally.msat})
        return PaymentProof(payment_request=event.id, preimages=preimages, refund_to=refund_to)

    async def _unfinished(
        self, request_id: str, request: PaymentRequest, preimages: dict[str, str], refund_to: str | None
    ) -> None:
        """The bound wallet paid some invoices of `request` but not all, so the call will not be served. The
        router's fee is paid first (`_pay_all`), so what was paid is only ever the router's own money, which it
        gives back from its own wallet to the call's refund link; without a link it says so (the operator returns
        it by hand: runbooks/payments.md)."""
        fee = next((p for p in request.payees if p.role == "router_fee" and p.payment_hash in preimages), None)
        if fee is None:
            return
        if self.return_fee is None or refund_to is None:
            log.warning("fee paid for a call not served, no refund link to return it", extra={"request": request_id})
            return
        try:
            await self.return_fee(fee.payment_hash, fee.amount_msat, refund_to)
        except Exception as exc:  # noqa: BLE001 - the caller gets the payment error; the refund is retried
            log.warning("fee of a call not served: refund not opened", extra={"error": type(exc).__name__})


class Tally:
    """What a bound wallet may have spent so far: an invoice being paid counts with its whole fee allowance (a
    wallet that failed or timed out may still have paid it), a paid one with the fee it took."""

    def __init__(self) -> None:
        self.msat = 0


async def _pay_all(wallet: Wallet, request: PaymentRequest, tally: Tally, preimages: dict[str, str]) -> None:
    """Pay each payee's invoice, the router's fee first, filling `preimages`. Paying the fee first means a wallet
    that runs dry or refuses part-way has paid only the router, which can give its own fee back; a node or a
    provider paid for a call that is then not served could not be made to. The wallet's idempotency key is the
    payment hash, so a retry never pays an invoice twice."""
    for payee in sorted(request.payees, key=lambda p: p.role != "router_fee"):
        tally.msat += payee.amount_msat + MAX_FEE_MSAT
        paid = await wallet.pay_invoice(payee.bolt11, MAX_FEE_MSAT, "fedai-edge-" + payee.payment_hash)
        tally.msat -= MAX_FEE_MSAT - paid.fee_msat
        if paid.payment_hash != payee.payment_hash:
            raise FedaiError(ErrorCode.PAYMENT_REFUSED, "the bound wallet paid another invoice than the one listed")
        preimages[payee.payment_hash] = paid.preimage
