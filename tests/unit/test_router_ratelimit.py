"""The rate limiter's memory: buckets idle for a whole window are forgotten a few per check (never a scan of all
of them), forgetting never changes a verdict, and a hard cap holds whatever the rate of fresh keys. Pure logic
with an injected clock."""

from __future__ import annotations

import itertools

import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai_router.ratelimit import FORGET_PER_CHECK, RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_fresh_keys_holds_only_the_keys_of_one_window() -> None:
    clock = Clock()
    limiter = RateLimiter(10, 60.0, clock=clock)
    for _ in range(10_000):  # one fresh key a second for close to three hours, as a registration flood sends
        clock.now += 1.0
        limiter.check(f"fresh-{clock.now}")
    assert len(limiter) <= 61


def test_an_idle_key_comes_back_with_a_full_bucket_as_if_it_had_been_kept() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 3.0, clock=clock)
    for _ in range(3):
        limiter.check("k")
    for i in range(10):  # other keys push "k" out once it has been idle a whole window
        clock.now += 0.5
        limiter.check(f"other-{i}")
    assert "k" not in limiter
    for _ in range(3):  # full again: exactly what the kept bucket would have held after 5 s
        limiter.check("k")
    with pytest.raises(FedaiError) as info:
        limiter.check("k")
    assert info.value.code is ErrorCode.RATE_LIMITED


def test_a_key_refused_within_the_window_stays_refused_whatever_else_arrives() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 600.0, clock=clock)
    limiter.check("abuser")
    limiter.check("abuser")
    for i in range(5_000):  # many fresh keys, all inside the abuser's window
        clock.now += 0.01
        limiter.check(f"fresh-{i}")
    with pytest.raises(FedaiError) as info:
        limiter.check("abuser")
    assert info.value.retry_after_ms is not None and info.value.retry_after_ms > 0


def test_forgetting_is_a_few_buckets_per_check_never_a_scan() -> None:
    clock = Clock()
    limiter = RateLimiter(10_000, 60.0, clock=clock)
    for i in range(1_000):  # a burst, then silence for longer than the window
        limiter.check(f"burst-{i}")
    clock.now += 120.0
    sizes = [len(limiter)]
    for _ in range(1_000):
        limiter.check("steady")
        sizes.append(len(limiter))
    assert sizes[-1] == 1  # only "steady" is left
    steps = [before - after for before, after in itertools.pairwise(sizes)]
    assert max(steps) <= FORGET_PER_CHECK  # "steady" added once, at most two forgotten per check
    assert sizes.index(1) >= 1_000 // FORGET_PER_CHECK  # drained over many checks, not at once


def test_refused_checks_forget_idle_buckets_too() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 10.0, clock=clock)
    for i in range(100):
        limiter.check(f"old-{i}")
    clock.now += 11.0
    limiter.check("hot")
    for _ in range(60):  # every one of these is refused, and still trims the idle ones
        with pytest.raises(FedaiError):
            limiter.check("hot")
    assert len(limiter) == 1


def test_the_cap_holds_when_every_key_is_active_within_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 3600.0, max_keys=50, clock=clock)
    for i in range(1_000):
        clock.now += 0.001
        limiter.check(f"fresh-{i}")
        assert len(limiter) <= 50


def test_an_explicit_now_still_overrides_the_clock() -> None:
    limiter = RateLimiter(1, 10.0, clock=lambda: 0.0)
    limiter.check("k", now=100.0)
    with pytest.raises(FedaiError):
        limiter.check("k", now=105.0)
    limiter.check("k", now=110.0)
