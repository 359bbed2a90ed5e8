"""StreamBudget with a fake clock: idle counts only the time spent waiting for the sender and restarts with each
delta; the total is wall time; output, chunk and wire bounds; the derived chunk bound; the drain's grace; and
the streaming settings of router and node (defaults, bounds, refusals)."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai.service.stream_limits import StreamBudget, StreamCapExceeded, StreamLimits
from fedai_node.config import from_env as node_from_env
from fedai_router.config import RouterSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budget(**limits: float) -> tuple[StreamBudget, Clock]:
    clock = Clock()
    return StreamBudget(StreamLimits(**limits), what="s", clock=clock), clock  # type: ignore[arg-type]


def test_only_waiting_counts_as_idle_and_a_delta_restarts_it() -> None:
    b, clock = budget(max_s=100, idle_s=10)
    clock.now += 50  # the reader was busy elsewhere (a slow client): not the sender's idle time
    assert b.window() == 10
    b.waited(6)  # keep-alives arrived meanwhile: still idle
    assert b.window() == 4
    b.delta("x")
    assert b.window() == 10
    b.waited(10)
    with pytest.raises(StreamCapExceeded) as err:
        b.window()
    assert (err.value.cap, err.value.code, err.value.message) == (
        "idle",
        "upstream_timeout",
        "s sent no output for 10 s",
    )
    assert b.tripped == "idle"


def test_the_total_is_wall_time_and_wins_over_idle() -> None:
    b, clock = budget(max_s=5, idle_s=10)
    assert b.window() == 5
    clock.now += 4
    assert b.window() == 1
    clock.now += 1
    with pytest.raises(StreamCapExceeded) as err:
        b.check_time()
    assert (err.value.cap, err.value.message) == ("duration", "s exceeded its time limit of 5 s")


def test_output_and_chunk_bounds() -> None:
    b, _ = budget(max_output_bytes=4, max_chunks=3)
    b.delta("é")  # two UTF-8 bytes
    b.delta("ab")
    with pytest.raises(StreamCapExceeded) as err:
        b.delta("c")
    assert (err.value.cap, err.value.code) == ("output_bytes", "upstream_error")
    b, _ = budget(max_chunks=2)
    b.delta("a")
    b.delta("b")
    with pytest.raises(StreamCapExceeded) as err:
        b.delta("c")
    assert err.value.cap == "chunks"


def test_wire_bound_follows_output_and_chunks() -> None:
    limits = StreamLimits(max_output_bytes=1000, max_chunks=10)
    assert limits.max_wire_bytes == 8 * 1000 + 1024 * 10 + 256 * 1024
    b = StreamBudget(limits)
    b.received(limits.max_wire_bytes)
    with pytest.raises(StreamCapExceeded) as err:
        b.received(1)
    assert err.value.cap == "wire_bytes"


def test_chunk_bound_derived_from_max_tokens() -> None:
    limits = StreamLimits(max_chunks=1000)
    assert limits.for_request(10).max_chunks == 56
    assert limits.for_request(100_000).max_chunks == 1000


def test_grace_gives_a_fresh_short_window_and_doubled_counts() -> None:
    b, clock = budget(max_s=5, idle_s=10, max_chunks=3)
    for delta in "abc":
        b.delta(delta)
    with pytest.raises(StreamCapExceeded):
        b.delta("d")
    clock.now += 6  # past the total
    b.waited(9)
    b.grace(2)
    assert b.window() == 2  # a fresh deadline, the idle time forgotten
    b.delta("e")
    b.delta("f")
    with pytest.raises(StreamCapExceeded):
        b.delta("g")
    assert b.tripped == "chunks"  # the first bound that tripped is kept


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamLimits(idle_s=0)


ROUTER_KEY = {"ROUTER_PRIVATE_KEY": Keys.generate().nsec}
NODE_BASE = {
    "NODE_PRIVATE_KEY": Keys.generate().nsec,
    "ROUTER_PUBLIC_KEY": Keys.generate().pubkey,
    "NODE_RUNNER": "mock",
}


def test_router_stream_settings() -> None:
    assert RouterSettings.from_env(Env(ROUTER_KEY)).stream_limits == StreamLimits(600, 60, 1024 * 1024, 32_768)
    values = {
        "ROUTER_STREAM_MAX_S": "30",
        "ROUTER_STREAM_IDLE_S": "5",
        "ROUTER_STREAM_MAX_OUTPUT_BYTES": "65536",
        "ROUTER_STREAM_MAX_CHUNKS": "1000",
    }
    assert RouterSettings.from_env(Env({**ROUTER_KEY, **values})).stream_limits == StreamLimits(30, 5, 65536, 1000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROUTER_STREAM_MAX_S", "0"),
        ("ROUTER_STREAM_IDLE_S", "7200"),
        ("ROUTER_STREAM_MAX_OUTPUT_BYTES", "100"),
        ("ROUTER_STREAM_MAX_OUTPUT_BYTES", str(64 * 1024 * 1024)),
        ("ROUTER_STREAM_MAX_CHUNKS", "1"),
    ],
)
def test_router_stream_settings_out_of_range_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RouterSettings.from_env(Env({**ROUTER_KEY, name: value}))


def test_node_stream_settings() -> None:
    settings = node_from_env(Env({**NODE_BASE, "NODE_RUNNER_TIMEOUT_MS": "90000"}))
    assert settings.stream_limits == StreamLimits(90, 60, 1024 * 1024, 32_768)
    values = {"NODE_STREAM_IDLE_S": "2", "NODE_STREAM_MAX_OUTPUT_BYTES": "4096", "NODE_STREAM_MAX_CHUNKS": "64"}
    assert node_from_env(Env({**NODE_BASE, **values})).stream_limits == StreamLimits(60, 2, 4096, 64)
    refused = {"NODE_STREAM_IDLE_S": "0", "NODE_STREAM_MAX_OUTPUT_BYTES": "10", "NODE_STREAM_MAX_CHUNKS": "0"}
    for name, value in refused.items():
        with pytest.raises(ConfigError, match=name):
            node_from_env(Env({**NODE_BASE, name: value}))
