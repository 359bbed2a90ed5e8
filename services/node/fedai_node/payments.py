"""The node's side of payments (docs/payments.md#the-flow): it invoices its share of a quote from its own wallet
(`POST /invoice`, router-only and signed both ways), and before running a paid request it checks the forwarded
proof, that its invoice is settled in its own wallet for at least its share, and claims it single-use.

A claim is released when serving fails (the same proof serves a retry until the payment request expires) and
consumed when the answer was produced.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from fedai.payments.invoice import check_invoice
from fedai.payments.wallet import InvoiceState, Wallet
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InvoiceRequest, PayeeInvoice, PaymentRequest, Settlement, decode_payload
from fedai.protocol.payment import PaymentRequired, check_forwarded, claim_error, invalid, seal_invoice
from fedai.service.http import error_response, event_response
from fedai_node.admission import Admission
from fedai_node.payment_claims import NodeClaim, NodeClaims
from fedai_node.serving import Admitted
from fedai_node.settlement import NodeSettlement

MAX_INVOICE_TTL_S = 3600  # an invoice request further ahead than this is refused
MIN_INVOICE_TTL_S = 10
_INVOICE_KINDS = frozenset({Kind.INVOICE_REQUEST})


@dataclass(frozen=True, slots=True)
class Held:
    """A settled invoice of this node, claimed by one forwarded request (`claimant`)."""

    payment_hash: str
    claimant: str
    share_msat: int = 0  # the node's share of the payment request, as paid
    refund_to: str | None = None  # the client's refund destination, as the router forwarded it


def invoice_key(request: InvoiceRequest) -> str:
    """The wallet's idempotency key for an invoice request: its binding, so a retry answers the same invoice."""
    binding = f"fedai-node|{request.router}|{request.quote}|{request.client}|{request.amount_msat}"
    return "fedai-" + hashlib.sha256(binding.encode()).hexdigest()


class NodePayments:
    """What the node does with its wallet: invoice a quote's share, and check, claim and settle a paid request.
    Without a wallet (no NODE_WALLET) nothing is paid: `/invoice` answers `not_found`."""

    def __init__(
        self, keys: Keys, admission: Admission, wallet: Wallet | None, *, network: str, required: bool
    ) -> None:
        self._keys = keys
        self._admission = admission
        self._network = network
        self.wallet = wallet
        self.claims: NodeClaims | None = None  # set at start, on the NODE_DB_URL pool
        self.settlement: NodeSettlement | None = None  # refunds of the unused share (docs/payments.md#refunds)
        self.required = required

    async def invoice(self, request: Request) -> Response:
        """`POST /invoice`: a trusted router's signed invoice request → this node's signed payment.invoice."""
        try:
            if self.wallet is None:
                raise FedaiError(ErrorCode.NOT_FOUND, "this node takes no payment (no NODE_WALLET)")
            opened, _ = await self._admission.open(request, InvoiceRequest, _INVOICE_KINDS)
            return event_response(await self._issue(opened.event.pubkey, opened.payload, self.wallet))
        except FedaiError as err:
            return error_response(err)

    async def _issue(self, signer: str, ask: InvoiceRequest, wallet: Wallet) -> Event:
        if ask.router != signer:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "invoice request names another router than its signer")
        ttl = ask.expires_at - math.ceil(time.time())
        if not MIN_INVOICE_TTL_S <= ttl <= MAX_INVOICE_TTL_S:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "invoice request expires too soon or too far ahead")
        made = await wallet.create_invoice(ask.amount_msat, f"fedai quote {ask.quote}", ttl, invoice_key(ask))
        # the backend checked amount and hash; here also the network it is on (a wrong invoice is never signed)
        check_invoice(
            made.bolt11,
            amount_msat=ask.amount_msat,
            network=self._network,
            now=time.time(),
            payment_hash=made.payment_hash,
            min_expiry_s=MIN_INVOICE_TTL_S - 1,
        )
        payload = PayeeInvoice(
            role="node",
            quote=ask.quote,
            client=ask.client,
            router=ask.router,
            amount_msat=ask.amount_msat,
            payment_hash=made.payment_hash,
            bolt11=made.bolt11,
            expires_at=min(made.expires_at, ask.expires_at),
        )
        return seal_invoice(self._keys, payload)

    async def hold(self, admitted: Admitted) -> Held | None:
        """Check and claim the payment of an admitted request; None when it carries none and none is required."""
        req, event = admitted.req, admitted.event
        forwarded = req.forwarded_payment
        if forwarded is None or self.wallet is None or self.claims is None:
            if self.required:
                raise PaymentRequired("this node serves paid requests only")
            return None
        if req.client is None or req.quote_id is None:
            raise invalid("a paid request names its client and quote")
        if self.settlement is not None:
            self.settlement.check_destination(forwarded.refund_to)
        now = time.time()
        entry = check_forwarded(
            forwarded, payee=self._keys.pubkey, router=event.pubkey, client=req.client, quote_id=req.quote_id, now=now
        )
        status = await self.wallet.lookup_invoice(entry.payment_hash)
        if status.state is not InvoiceState.PAID or status.amount_msat < entry.amount_msat:
            raise invalid("the invoice is not settled in this node's wallet for its amount")
        expires_at = decode_payload(forwarded.request.content, PaymentRequest).expires_at  # checked above
        claim = NodeClaim(
            entry.payment_hash, forwarded.request.id, event.pubkey, req.client, entry.amount_msat, expires_at, req.model
        )
        outcome = await self.claims.claim(claim, event.id, now)
        if self.settlement is not None:
            self.settlement.count_proof(str(outcome))
        error = claim_error(outcome)
        if error is not None:
            raise error
        return Held(entry.payment_hash, event.id, entry.amount_msat, forwarded.refund_to)

    def statement(self, held: Held | None, price_msat: int) -> Settlement | None:
        """What the node's metering record states of its share (None for an unpaid request)."""
        if held is None or self.settlement is None:
            return None
        return self.settlement.statement(held.payment_hash, held.share_msat, price_msat, held.refund_to)

    async def after_answer(self, held: Held | None, statement: Settlement | None) -> None:
        if held is not None and statement is not None and self.settlement is not None:
            await self.settlement.after_answer(statement, held.refund_to)

    async def settle(self, held: Held | None, *, served: bool) -> None:
        """Consume the claim of a request that was answered; release it when serving failed."""
        if held is None or self.claims is None:
            return
        if served:
            await self.claims.consume(held.payment_hash, held.claimant)
        else:
            await self.claims.release(held.payment_hash, held.claimant)
        if self.settlement is not None:
            self.settlement.count_proof("consumed" if served else "released")
