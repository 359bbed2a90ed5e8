"""fedai.payments.backends.guard: argument checks, backend field parsing, in-process idempotency."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from fedai.payments.backends.guard import (
    BadReply,
    Idempotency,
    b64_hex,
    check_create,
    check_fee,
    check_key,
    hex32,
    integer,
    msat,
)
from fedai.payments.errors import WalletRefused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, "m", 60, "k"), "amount_msat"),
        ((True, "m", 60, "k"), "amount_msat"),
        ((1.5, "m", 60, "k"), "amount_msat"),
        ((1, "m", 0, "k"), "expiry_s"),
        ((1, "m", 31 * 24 * 3600, "k"), "expiry_s"),
        ((1, "x" * 257, 60, "k"), "memo"),
        ((1, "line\nbreak", 60, "k"), "memo"),
        ((1, "m", 60, ""), "idempotency_key"),
        ((1, "m", 60, "k" * 129), "idempotency_key"),
    ],
)
def test_check_create_refuses(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_create(*args)  # type: ignore[arg-type]


def test_checks_accept_good_arguments() -> None:
    check_create(1, "", 1, "k")
    check_key("quote-1:node")
    check_fee(0)
    with pytest.raises(ValueError, match="max_fee_msat"):
        check_fee(-1)


def test_numbers_as_backends_write_them() -> None:
    assert integer(5, "x") == 5 and integer("5", "x") == 5
    assert msat("1000msat", "x") == 1000 and msat(1000, "x") == 1000 and msat("1000", "x") == 1000
    for bad in (-1, "-1", "1.5", "", None, True, "١٢", "9" * 21, "5sat"):
        with pytest.raises(BadReply):
            msat(bad, "x")
    with pytest.raises(BadReply):
        integer("5msat", "x")


def test_base64_and_hex_fields() -> None:
    raw = os.urandom(32)
    assert b64_hex(base64.b64encode(raw).decode(), "r_hash") == raw.hex()
    assert b64_hex(base64.urlsafe_b64encode(raw).decode(), "r_hash") == raw.hex()
    for bad in (None, "", "!!!!", base64.b64encode(raw[:31]).decode(), raw.hex()):
        with pytest.raises(BadReply):
            b64_hex(bad, "r_hash")
    assert hex32(raw.hex().upper(), "h") == raw.hex()
    with pytest.raises(BadReply):
        hex32(raw.hex()[:-2], "h")


async def test_idempotency_binds_keys_and_forgets_the_oldest() -> None:
    once = Idempotency("test wallet", limit=2)
    once.bind("a", "hash-1")
    once.bind("a", "hash-1")
    with pytest.raises(WalletRefused) as caught:
        once.bind("a", "hash-2")
    assert caught.value.reason == "idempotency_conflict"
    once.bind("b", "hash-2")
    once.bind("c", "hash-3")  # "a" is forgotten: the bound is on memory, durability is the caller's
    once.bind("a", "hash-4")


async def test_serialized_runs_one_at_a_time_per_name_and_cleans_up() -> None:
    once = Idempotency("test wallet")
    inside: list[int] = []
    peak = 0

    async def work(n: int) -> None:
        nonlocal peak
        async with once.serialized("hash"):
            inside.append(n)
            peak = max(peak, len(inside))
            await asyncio.sleep(0.01)
            inside.remove(n)

    await asyncio.gather(*(work(n) for n in range(5)))
    assert peak == 1
    assert once._locks == {}
