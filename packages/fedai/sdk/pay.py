"""Paying a quote from the client's own wallet (docs/payments.md#the-flow, docs/sdk.md#paying).

`verify_payment_request` checks what the router asks to be paid before anything is paid: the router's
signature, this client and this quote, each payee's own signed invoice, the amounts the signed quote split, and
every BOLT11 invoice (decoded: network, amount, payment hash, expiry). `pay_request` then pays each invoice from
the client's wallet and returns the proof that `infer(..., payment=proof)` carries. Decoding invoices needs
the `pay` extra (`pip install 'fedai[pay]'`), imported only when paying.
"""

from __future__ import annotations

import time

from fedai.payments.wallet import Wallet
from fedai.protocol.envelope import Opened, seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event, decode_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import PaymentProof, PaymentRequest, PayRequest, QuoteResponse
from fedai.protocol.payment import QuoteTerms, check_payment_request
from fedai.sdk.errors import ChainError, Link

DEFAULT_MAX_FEE_MSAT = 10_000  # routing fees the client's wallet may pay per invoice
MAX_REQUEST_BYTES = 64 * 1024  # a payment request with its payees' invoice events
MIN_EXPIRY_S = 5  # an invoice with less left than this is not paid (the payment could land after it expired)


def verify_payment_request(
    event: Event, quote: QuoteResponse | str, *, router: str, client: str, network: str, now: float | None = None
) -> Opened[PaymentRequest]:
    """The payment request is the router's, for this client and quote, split as quoted, each payee's invoice its
    own, and every BOLT11 string the invoice it claims to be. Raises `ChainError` (link `payment_request`).
    Given only the quote's id (`fedai pay QUOTE_ID`), everything but the split against the signed quote is checked."""
    from fedai.payments.invoice import check_invoice  # the `pay` extra

    at = time.time() if now is None else now
    try:
        terms = quote if isinstance(quote, str) else QuoteTerms.from_response(quote)
        opened = check_payment_request(event, router=router, client=client, quote=terms, now=at)
        for payee in opened.payload.payees:
            check_invoice(
                payee.bolt11,
                amount_msat=payee.amount_msat,
                network=network,
                now=at,
                payment_hash=payee.payment_hash,
                min_expiry_s=MIN_EXPIRY_S,
            )
    except FedaiError as err:
        raise ChainError.wrap(Link.PAYMENT_REQUEST, err) from None
    return opened


async def pay_request(
    request: Opened[PaymentRequest], wallet: Wallet, *, max_fee_msat: int = DEFAULT_MAX_FEE_MSAT
) -> PaymentProof:
    """Pay every invoice of a verified payment request from `wallet`; the preimages are the proof. The wallet's
    idempotency key is the payment hash: paying again (after a timeout, say) answers the first payment."""
    preimages: dict[str, str] = {}
    for payee in request.payload.payees:
        paid = await wallet.pay_invoice(payee.bolt11, max_fee_msat, "fedai-pay-" + payee.payment_hash)
        if paid.payment_hash != payee.payment_hash:
            raise ChainError(Link.PAYMENT_REQUEST, "the wallet paid another invoice than the one listed")
        preimages[payee.payment_hash] = paid.preimage  # a Payment's preimage hashes to its payment hash
    return PaymentProof(payment_request=request.event.id, preimages=preimages)


async def pay_with_spec(
    request: Opened[PaymentRequest], spec: str, *, max_fee_msat: int = DEFAULT_MAX_FEE_MSAT
) -> PaymentProof:
    """Open the wallet `spec` names (a URI or a file: docs/payments.md#wallet-uris), pay, and close it, all in
    the running event loop (what the synchronous client does, in a loop of its own)."""
    from fedai.payments.config import open_wallet  # the `pay` extra

    wallet = open_wallet(spec, "--wallet")
    try:
        return await pay_request(request, wallet, max_fee_msat=max_fee_msat)
    finally:
        await wallet.aclose()


def pay_event(keys: Keys, router: str, quote_id: str) -> Event:
    """The client's signed pay.request (kind 21047) for `POST /pay`."""
    return seal(keys, Kind.PAY_REQUEST, PayRequest(quote_id=quote_id), to=router, nonce=True)


def answered_request(content: bytes) -> Event:
    """The payment request a `POST /pay` answered (checked by `verify_payment_request`)."""
    try:
        return decode_event(content, MAX_REQUEST_BYTES)
    except FedaiError as err:
        raise ChainError.wrap(Link.PAYMENT_REQUEST, err) from None


__all__ = [
    "DEFAULT_MAX_FEE_MSAT",
    "answered_request",
    "pay_event",
    "pay_request",
    "pay_with_spec",
    "verify_payment_request",
]
