"""The relay pool's connection metrics, read from the pool at each scrape: relays configured, relays connected
now, and reconnections after a dropped connection (the signals the relay alerts in infra/prometheus use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONFIGURED = "fedai_router_relays"
CONNECTED = "fedai_router_relays_connected"
RECONNECTS = "fedai_router_relay_reconnects"


class PoolView(Protocol):
    """What the collector reads from a `fedai.nostr.RelayPool`."""

    @property
    def urls(self) -> list[str]: ...

    @property
    def connected(self) -> int: ...

    @property
    def stats(self) -> dict[str, int]: ...


class RelayPoolCollector(Collector):
    def __init__(self, pool: PoolView) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        yield GaugeMetricFamily(CONFIGURED, "Relays configured (ROUTER_RELAYS)", value=len(pool.urls))
        yield GaugeMetricFamily(CONNECTED, "Relays connected now", value=pool.connected)
        yield CounterMetricFamily(
            RECONNECTS, "Connections made again after a relay connection dropped", value=pool.stats.get("reconnects", 0)
        )

    def describe(self) -> Iterator[Metric]:
        """The families' names and types without reading the pool (what registration checks)."""
        yield GaugeMetricFamily(CONFIGURED, "Relays configured (ROUTER_RELAYS)")
        yield GaugeMetricFamily(CONNECTED, "Relays connected now")
        yield CounterMetricFamily(RECONNECTS, "Connections made again after a relay connection dropped")
