"""Issuing payment requests (docs/payments.md#the-flow): `POST /pay`, and the request a 402 carries.

For a client's quote the router asks the quote's node for its own invoice (`POST /invoice` on the node, signed
both ways), creates its fee invoice in its own wallet (only when the fee is above zero), checks both, signs the
payment.request (21036) and records it. Nothing is recorded until every part was obtained and checked: a wallet
that is down is a 503 `payment_backend_unavailable` and leaves no row behind. The router never receives the
node's money: the node's invoice is signed by the node's key and comes from the node's wallet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import asyncpg

from fedai.payments.errors import InvalidInvoice, WalletUnavailable
from fedai.payments.invoice import check_invoice
from fedai.payments.wallet import Wallet
from fedai.protocol.envelope import open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InvoiceRequest, Payee, PayeeInvoice, PaymentRequest, PayRequest
from fedai.protocol.payment import QuoteTerms, check_payment_request, seal_invoice, seal_payment_request
from fedai_router.claims import Claims
from fedai_router.intake import Intake
from fedai_router.node_state import NodeState
from fedai_router.outbound import Outbound
from fedai_router.paid_offload import PaidOffload
from fedai_router.store.payments import PaymentStore
from fedai_router.store.quotes import QuoteRow, get_quote

MIN_LEFT_S = 30  # a quote with less life left than this is not worth paying: ask a new one
MIN_INVOICE_EXPIRY_S = 10  # what a payee's invoice must still have left when the router checks it
MAX_INVOICE_EVENT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class PaySettings:
    network: str  # ROUTER_LN_NETWORK
    ttl_s: int  # ROUTER_PAYMENT_TTL_S: a payment request lives at most this long (and never past its quote)
    node_timeout_s: float


def fee_key(router: str, quote: str, client: str, amount_msat: int, expires_at: int) -> str:
    """The router wallet's idempotency key for a fee invoice: its binding (a retry answers the same invoice)."""
    binding = f"fedai-fee|{router}|{quote}|{client}|{amount_msat}|{expires_at}"
    return "fedai-" + hashlib.sha256(binding.encode()).hexdigest()


def _terms(quote: QuoteRow, provider: str | None = None) -> QuoteTerms:
    """The quote's terms; with `provider` (the quote's work is a peer router's), that router is the work's payee."""
    node_msat = quote.input_msat + quote.output_msat
    node = None if provider is not None else quote.node
    expires_at = int(quote.expires_at.timestamp())
    return QuoteTerms(quote.id, node, node_msat, quote.router_fee_msat, quote.total_msat, expires_at, provider=provider)


def _payee(event: Event, invoice: PayeeInvoice, payee: str) -> Payee:
    return Payee(
        role=invoice.role,
        payee=payee,
        amount_msat=invoice.amount_msat,
        bolt11=invoice.bolt11,
        payment_hash=invoice.payment_hash,
        invoice=event,
    )


class PaymentRequests:
    """Builds, checks and records the payment request of a quote; the same one again while it is valid."""

    def __init__(
        self,
        *,
        keys: Keys,
        intake: Intake,
        claims: Claims,
        pool: asyncpg.Pool,
        store: PaymentStore,
        wallet: Wallet | None,
        outbound: Outbound,
        nodes: Mapping[str, NodeState],
        settings: PaySettings,
    ) -> None:
        self.keys = keys
        self.intake = intake
        self.claims = claims
        self.pool = pool  # the quotes
        self.store = store
        self.wallet = wallet  # the router's own (ROUTER_WALLET), for its fee
        self.outbound = outbound
        self.nodes = nodes  # the registry's nodes, by pubkey
        self.settings = settings
        self.offload: PaidOffload | None = None  # a paying router with federation: a provider's quote

    async def handle(self, body: bytes) -> Event:
        """`POST /pay`: a client's signed pay.request (quote id) → the router-signed payment.request."""
        opened = self.intake.open_client(body, PayRequest, Kind.PAY_REQUEST)
        await self.claims.claim(opened.event)
        return await self.for_quote(opened.event.pubkey, opened.payload.quote_id)

    async def for_quote(self, client: str, quote_id: str) -> Event:
        """The payment request of `client`'s quote: the one already issued if still valid, else a new one."""
        now = time.time()
        quote = await get_quote(self.pool, quote_id)
        if quote is None or quote.client != client or quote.router != self.keys.pubkey:
            raise FedaiError(
                ErrorCode.QUOTE_INVALID, "unknown quote for this client (quotes are per router and client)"
            )
        if quote.used_at is not None:
            raise FedaiError(ErrorCode.QUOTE_INVALID, "quote has already been used")
        if quote.expires_at.timestamp() - now < MIN_LEFT_S:
            raise FedaiError(ErrorCode.QUOTE_INVALID, "quote expires too soon to be paid; ask a new quote")
        issued = await self.store.issued_for(quote_id, client, now)
        if issued is not None:
            return issued
        event, request = await self._build(quote, now)
        try:
            await self.store.record(event, request)
        except asyncpg.UniqueViolationError:  # a concurrent /pay for the same quote recorded the same invoices first
            issued = await self.store.issued_for(quote_id, client, time.time())
            if issued is None:
                raise FedaiError(
                    ErrorCode.QUOTE_INVALID, "quote's invoices were already issued; ask a new quote"
                ) from None
            return issued
        if self.offload is not None:
            await self.offload.bind(quote.id, event.id)
        return event

    async def _build(self, quote: QuoteRow, now: float) -> tuple[Event, PaymentRequest]:
        expires_at = min(int(quote.expires_at.timestamp()), int(now) + self.settings.ttl_s)
        node_msat = quote.input_msat + quote.output_msat
        offload = self.offload
        won = None if offload is None else await offload.won(quote.id)
        if offload is None or won is None:
            payees = [await self._node_invoice(quote, node_msat, expires_at, now)]
        else:  # a peer router won the quoted job: it invoices its bid from its own wallet
            payees = [await offload.invoice(won, quote=quote.id, client=quote.client, expires_at=expires_at)]
        if quote.router_fee_msat > 0:
            payees.append(await self._fee_invoice(quote, expires_at, now))
        request = PaymentRequest(
            quote=quote.id,
            client=quote.client,
            router=self.keys.pubkey,
            expires_at=expires_at,
            total_msat=sum(p.amount_msat for p in payees),
            payees=payees,
        )
        event = seal_payment_request(self.keys, request)
        # what the client will check, checked once here; at /infer the router trusts its stored copy
        terms = _terms(quote, None if won is None else won.provider)
        check_payment_request(event, router=self.keys.pubkey, client=quote.client, quote=terms, now=now)
        return event, request

    async def _node_invoice(self, quote: QuoteRow, amount_msat: int, expires_at: int, now: float) -> Payee:
        """The quote's node invoices its share from its own wallet; its answer is checked before it is listed."""
        node = self.nodes.get(quote.node)
        if node is None:
            raise FedaiError(ErrorCode.NO_CAPACITY, "the quote's node is not available; ask a new quote", 1000)
        ask = InvoiceRequest(
            quote=quote.id, client=quote.client, router=self.keys.pubkey, amount_msat=amount_msat, expires_at=expires_at
        )
        sealed = seal(self.keys, Kind.INVOICE_REQUEST, ask, to=node.pubkey, nonce=True, expiration=expires_at)
        timeout = aiohttp.ClientTimeout(total=self.settings.node_timeout_s)
        try:
            body = await self.outbound.exchange(
                node.endpoint + "/invoice", sealed, target="node", client_timeout=timeout, limit=MAX_INVOICE_EVENT_BYTES
            )
        except FedaiError as err:
            if err.code == ErrorCode.NOT_FOUND:  # a node without NODE_WALLET, or one from before payments
                raise FedaiError(ErrorCode.UPSTREAM_ERROR, "the quote's node takes no payment") from None
            raise
        try:
            event = decode_event(body, MAX_INVOICE_EVENT_BYTES)
            invoice = open_event(
                event, PayeeInvoice, kinds=(Kind.PAYMENT_INVOICE,), signers=(node.pubkey,), skew_s=None
            )
        except FedaiError as err:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"the node's invoice does not verify: {err.message}") from None
        got = invoice.payload
        asked = (got.role, got.quote, got.client, got.router, got.amount_msat)
        if asked != ("node", quote.id, quote.client, self.keys.pubkey, amount_msat) or got.expires_at > expires_at:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, "the node's invoice is not for what was asked")
        try:
            self._check_bolt11(got, now)
        except InvalidInvoice as err:
            raise FedaiError(ErrorCode.UPSTREAM_ERROR, f"the node's invoice fails a check ({err.reason})") from None
        return _payee(event, got, node.pubkey)

    async def _fee_invoice(self, quote: QuoteRow, expires_at: int, now: float) -> Payee:
        """The router's fee, invoiced from the router's own wallet."""
        if self.wallet is None:  # refused at start: a paying router with a fee needs ROUTER_WALLET
            raise FedaiError(ErrorCode.INTERNAL, "no router wallet for the fee")
        fee = quote.router_fee_msat
        key = fee_key(self.keys.pubkey, quote.id, quote.client, fee, expires_at)
        made = await self.wallet.create_invoice(fee, f"fedai fee {quote.id}", max(1, expires_at - int(now)), key)
        payload = PayeeInvoice(
            role="router_fee",
            quote=quote.id,
            client=quote.client,
            router=self.keys.pubkey,
            amount_msat=fee,
            payment_hash=made.payment_hash,
            bolt11=made.bolt11,
            expires_at=min(made.expires_at, expires_at),
        )
        try:
            self._check_bolt11(payload, now)
        except InvalidInvoice as err:  # our own wallet answered an unusable invoice (another network, say)
            raise WalletUnavailable(
                f"the router's wallet answered an invoice that fails a check ({err.reason})"
            ) from None
        return _payee(seal_invoice(self.keys, payload), payload, self.keys.pubkey)

    def _check_bolt11(self, invoice: PayeeInvoice, now: float) -> None:
        """The invoice decodes, is signed, on our network, for exactly its amount and payment hash. (Its Lightning
        payee key cannot be tied to a Nostr key here: the signed invoice event is what names the payee.)"""
        check_invoice(
            invoice.bolt11,
            amount_msat=invoice.amount_msat,
            network=self.settings.network,
            now=now,
            payment_hash=invoice.payment_hash,
            min_expiry_s=MIN_INVOICE_EXPIRY_S,
        )
