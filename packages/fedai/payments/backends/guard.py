"""What every backend checks and remembers the same way: the arguments it is given, the numbers and hex it reads
from a backend's JSON, and the idempotency keys it has seen in this process."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from fedai.payments.errors import WalletRefused, WalletUnavailable
from fedai.payments.wallet import is_hex32

MAX_MEMO = 256
MAX_KEY = 128
MAX_EXPIRY_S = 30 * 24 * 3600
MAX_AMOUNT_MSAT = 21_000_000 * 100_000_000 * 1000


class BadReply(ValueError):
    """A field of a backend's answer that is missing or not what its API documents."""


def check_create(amount_msat: int, memo: str, expiry_s: int, idempotency_key: str) -> None:
    """ValueError for arguments no backend should be sent (a caller's bug, not the backend's)."""
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or not 0 < amount_msat <= MAX_AMOUNT_MSAT:
        raise ValueError("amount_msat must be a positive integer")
    if not isinstance(expiry_s, int) or not 0 < expiry_s <= MAX_EXPIRY_S:
        raise ValueError(f"expiry_s must be between 1 and {MAX_EXPIRY_S}")
    if len(memo) > MAX_MEMO or not memo.isprintable():
        raise ValueError(f"memo must be printable and at most {MAX_MEMO} characters")
    check_key(idempotency_key)


def check_key(idempotency_key: str) -> None:
    if not 0 < len(idempotency_key) <= MAX_KEY or not idempotency_key.isprintable():
        raise ValueError(f"idempotency_key must be 1 to {MAX_KEY} printable characters")


def check_fee(max_fee_msat: int) -> None:
    if isinstance(max_fee_msat, bool) or not isinstance(max_fee_msat, int) or max_fee_msat < 0:
        raise ValueError("max_fee_msat must be a non-negative integer")


def integer(value: Any, what: str) -> int:
    """A non-negative integer written as a number or as a string of digits (LND writes int64 as strings)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    raise BadReply(f"{what} is not a non-negative integer")


def msat(value: Any, what: str) -> int:
    """A millisatoshi amount: 1000, "1000", or "1000msat" (older Core Lightning)."""
    return integer(value.removesuffix("msat") if isinstance(value, str) else value, what)


def b64_hex(value: Any, what: str) -> str:
    """32 bytes written in base64 (LND's bytes fields, standard or URL-safe) as lowercase hex."""
    if not isinstance(value, str):
        raise BadReply(f"{what} is missing")
    try:
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise BadReply(f"{what} is not base64") from None
    if len(raw) != 32:
        raise BadReply(f"{what} is not 32 bytes")
    return raw.hex()


def hex32(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_hex32(value.lower()):
        raise BadReply(f"{what} is not 32 bytes of hex")
    return value.lower()


def text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadReply(f"{what} is missing")
    return value


def bad_reply(name: str, exc: ValueError) -> WalletUnavailable:
    """A backend answer that breaks its documented shape (or a preimage that does not match) as a 503."""
    return WalletUnavailable(f"{name}: unexpected answer ({exc})", "bad_reply")


class Idempotency:
    """In this process: one outcome per idempotency key, and one call at a time per key or payment hash.

    Bounded (least recently used keys are forgotten); durable idempotency is the caller's, who records the key
    before calling. A key bound to one value (a payment hash, an amount) and then used for another is refused.
    """

    def __init__(self, name: str, limit: int = 10_000) -> None:
        self._name = name
        self._limit = limit
        self._bound: OrderedDict[str, str] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def bind(self, key: str, value: str) -> None:
        """Remember that `key` is for `value`; WalletRefused `idempotency_conflict` if it was for another."""
        previous = self._bound.get(key)
        if previous is not None and previous != value:
            raise WalletRefused(
                f"{self._name}: idempotency key already used for another request", "idempotency_conflict"
            )
        self._bound[key] = value
        self._bound.move_to_end(key)
        while len(self._bound) > self._limit:
            self._bound.popitem(last=False)

    @contextlib.asynccontextmanager
    async def serialized(self, name: str) -> AsyncIterator[None]:
        """Hold the lock of `name` (a key or a payment hash) for the duration; locks go when nobody waits."""
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)
