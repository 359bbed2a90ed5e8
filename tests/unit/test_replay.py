"""fedai.protocol.replay: the in-memory replay guard and the claim-or-raise helper."""

from __future__ import annotations

import time

import pytest

from fedai.protocol.envelope import DEFAULT_CLOCK_SKEW_S
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.replay import RETENTION_MARGIN_S, MemoryReplayGuard, ReplayGuard, claim_or_raise, retain_until

NOW = 1_700_000_000


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


def test_retain_until_is_created_at_plus_skew_plus_margin(keys: Keys) -> None:
    ev = sign_event(keys, 1, "x", created_at=NOW)
    assert RETENTION_MARGIN_S > 0
    assert retain_until(ev, 60) == float(NOW + 60 + RETENTION_MARGIN_S)
    assert retain_until(ev, 0) == float(NOW + RETENTION_MARGIN_S)
    # an id is remembered past the last instant it could still pass the freshness check
    assert retain_until(ev, DEFAULT_CLOCK_SKEW_S) > NOW + DEFAULT_CLOCK_SKEW_S


async def test_claim_then_replay() -> None:
    guard = MemoryReplayGuard()
    assert await guard.claim("a" * 64, NOW + 10) is True
    assert await guard.claim("a" * 64, NOW + 10) is False
    assert await guard.claim("a" * 64, NOW + 999) is False  # a later retention does not reopen it
    assert await guard.claim("b" * 64, NOW + 10) is True
    assert len(guard) == 2


async def test_prune_drops_only_expired_ids() -> None:
    guard = MemoryReplayGuard()
    await guard.claim("old", NOW - 1)
    await guard.claim("edge", NOW)
    await guard.claim("new", NOW + 1)
    guard.prune(now=NOW)
    assert len(guard) == 2
    # the survivors are still refused, the pruned id may be claimed again
    assert await guard.claim("edge", NOW) is False
    assert await guard.claim("new", NOW + 1) is False
    assert await guard.claim("old", NOW + 100) is True
    guard.prune(now=NOW + 50)
    assert len(guard) == 1
    assert await guard.claim("old", NOW + 100) is False


async def test_prune_uses_the_real_clock_by_default() -> None:
    guard = MemoryReplayGuard()
    now = time.time()
    await guard.claim("past", now - 100)
    await guard.claim("future", now + 100)
    guard.prune()
    assert len(guard) == 1
    assert await guard.claim("future", now + 100) is False


async def test_automatic_prune_every_n_claims() -> None:
    guard = MemoryReplayGuard(prune_every=3)
    now = time.time()
    await guard.claim("expired-1", now - 10)
    await guard.claim("expired-2", now - 10)
    assert len(guard) == 2  # not yet pruned
    await guard.claim("live", now + 100)  # third claim triggers a prune
    assert len(guard) == 1
    assert await guard.claim("live", now + 100) is False
    # a refused claim does not count towards the next prune
    await guard.claim("expired-3", now - 10)
    assert len(guard) == 2


async def test_claim_or_raise(keys: Keys) -> None:
    guard = MemoryReplayGuard()
    ev = sign_event(keys, 1, "x", created_at=NOW)
    await claim_or_raise(guard, ev, DEFAULT_CLOCK_SKEW_S)
    with pytest.raises(FedaiError) as info:
        await claim_or_raise(guard, ev, DEFAULT_CLOCK_SKEW_S)
    assert info.value.code is ErrorCode.REPLAY
    assert info.value.status == 409
    # a different event is unaffected
    await claim_or_raise(guard, sign_event(keys, 1, "y", created_at=NOW), DEFAULT_CLOCK_SKEW_S)


async def test_claim_or_raise_passes_the_retention_time(keys: Keys) -> None:
    seen: list[tuple[str, float]] = []

    class Recorder:
        async def claim(self, event_id: str, retain_until: float) -> bool:
            seen.append((event_id, retain_until))
            return True

    recorder: ReplayGuard = Recorder()
    ev = sign_event(keys, 1, "x", created_at=NOW)
    await claim_or_raise(recorder, ev, 30)
    assert seen == [(ev.id, float(NOW + 30 + RETENTION_MARGIN_S))]


def test_memory_guard_satisfies_the_protocol() -> None:
    guard: ReplayGuard = MemoryReplayGuard()
    assert callable(guard.claim)
