"""Event kinds used by fedai (docs/decisions.md#kinds; changes are recorded in docs/protocol.md)."""

from __future__ import annotations

from enum import IntEnum


class Kind(IntEnum):
    # data plane: HTTP only, never published (ephemeral range)
    NODE_HEARTBEAT = 21030
    QUOTE_REQUEST = 21031
    QUOTE_RESPONSE = 21032
    INFER_REQUEST = 21033
    INFER_RESPONSE = 21034
    METERING_RECORD = 21035
    PAYMENT_REQUEST = 21036
    PAYMENT_RECEIPT = 21037
    JOB_SUBMIT = 21038
    JOB_RESULT = 21039
    STREAM_CHUNK = 21040
    ERROR = 21041
    ACK = 21042
    INFER_CANCEL = 21043
    JOB_RECEIPT = 21044
    PAYMENT_INVOICE = 21045  # a payee's own invoice, nested in a payment.request (docs/protocol.md#kinds)
    INVOICE_REQUEST = 21046  # router → node `POST /invoice`: invoice this quote's share (docs/payments.md#the-flow)
    PAY_REQUEST = 21047  # client → router `POST /pay`: the payment request of a quote (docs/payments.md#the-flow)
    # relays, addressable (`d` tag)
    ROUTER_CAPS = 31020
    ROUTER_PRICE = 31021
    ROUTER_STATUS = 31022
    NODE_ANNOUNCE = 31023
    NODE_MANIFEST = 31024  # `d` = fedai-manifest; also POSTed to a router's /manifest (docs/manifests.md)
    # relays, ephemeral, always with `expiration`
    RFB = 21020
    BID = 21021
    AWARD = 21022
    CANCEL = 21023


def is_ephemeral(kind: int) -> bool:
    return 20000 <= kind < 30000


def is_addressable(kind: int) -> bool:
    return 30000 <= kind < 40000
