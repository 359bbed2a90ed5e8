"""The endpoint-verdict cache's memory: bounded whatever the number of distinct endpoints, verdicts expire in the
order they were reached (dropped as checks arrive, no scan), and a cached refusal raised again and again holds
nothing of its callers. The resolver is the real `BoundedResolver` with a counting lookup in place of DNS."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai_router.endpoints import EndpointValidator
from fedai_router.resolver import AddrInfo, BoundedResolver


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dns:
    """Names starting with "private" resolve to a private address, the rest to a public one; counts lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int, family: int, flags: int) -> Sequence[AddrInfo]:
        self.lookups.append(host)
        address = "10.0.0.7" if host.startswith("private") else "93.184.216.34"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


def validator(dns: Dns, clock: Clock, max_entries: int = 10_000) -> EndpointValidator:
    resolver = BoundedResolver(concurrency=2, timeout_s=5.0, lookup=dns)
    return EndpointValidator(False, resolver, cache_ttl_s=60.0, max_entries=max_entries, clock=clock)


async def test_distinct_endpoints_never_hold_more_than_the_cap() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock, max_entries=100)
    for i in range(1_000):  # a registration flood names a new endpoint each time, all within one TTL
        clock.now += 0.01
        await endpoints.check(f"http://node-{i}.example:8080")
        assert len(endpoints) <= 100


async def test_expired_verdicts_are_dropped_as_checks_arrive() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock)
    for i in range(50):
        await endpoints.check(f"http://node-{i}.example")
    clock.now += 61.0
    await endpoints.check("http://later.example")
    assert len(endpoints) == 1


async def test_a_verdict_is_reused_within_its_ttl_and_renewed_after_it() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock)
    await endpoints.check("http://node.example")
    clock.now += 59.0
    await endpoints.check("http://node.example")
    assert dns.lookups == ["node.example"]
    clock.now += 2.0
    await endpoints.check("http://node.example")
    assert dns.lookups == ["node.example", "node.example"]


async def test_a_renewed_verdict_moves_to_the_new_end() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock)
    await endpoints.check("http://a.example")  # expires at 1060
    clock.now += 10.0
    await endpoints.check("http://b.example")  # expires at 1070
    clock.now += 51.0
    await endpoints.check("http://a.example")  # renewed: expires at 1121, after b
    clock.now += 10.0  # 1071: b has expired, a has not; b is at the old end and goes
    await endpoints.check("http://c.example")
    assert len(endpoints) == 2
    await endpoints.check("http://a.example")
    assert dns.lookups == ["a.example", "b.example", "a.example", "c.example"]


async def test_a_cached_refusal_is_raised_afresh_each_time() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock)
    raised: list[FedaiError] = []
    for _ in range(200):  # a node with a private endpoint heartbeating on
        with pytest.raises(FedaiError) as info:
            await endpoints.check("http://private.example")
        raised.append(info.value)
    assert dns.lookups == ["private.example"]
    assert all(err.code is ErrorCode.FORBIDDEN for err in raised)
    assert len({id(err) for err in raised}) == len(raised)  # no instance is shared between callers


def frames(err: BaseException) -> int:
    tb, n = err.__traceback__, 0
    while tb is not None:
        tb, n = tb.tb_next, n + 1
    return n


async def test_raising_a_cached_refusal_does_not_grow_a_traceback() -> None:
    clock, dns = Clock(), Dns()
    endpoints = validator(dns, clock)
    with pytest.raises(FedaiError) as first:
        await endpoints.check("http://private.example")
    depth = frames(first.value)
    for _ in range(100):
        with pytest.raises(FedaiError) as later:
            await endpoints.check("http://private.example")
        assert frames(later.value) <= depth
    assert frames(first.value) == depth  # the first refusal did not grow either
