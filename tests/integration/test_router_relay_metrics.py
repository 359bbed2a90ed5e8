"""The router's relay metrics read a real relay pool: configured and connected relays, and a reconnection after
the relay went away and came back (what the relay alerts in infra/prometheus watch)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fedai.nostr import RelayPool, start_local_relay
from fedai_router.relay_metrics import RelayPoolCollector
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


async def test_relay_metrics_follow_a_relay_that_drops_and_returns() -> None:
    first = await start_local_relay()
    url = first.url
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    replacement = None
    registry = CollectorRegistry()
    pool = RelayPool([url, "ws://127.0.0.1:9/"], backoff_initial=0.05, backoff_max=0.2, connect_timeout=2.0)
    registry.register(RelayPoolCollector(pool))
    try:
        await pool.start()
        await eventually(lambda: sample(registry, "fedai_router_relays_connected") == 1, 10, "one relay connected")
        assert sample(registry, "fedai_router_relays") == 2  # the second URL never answers
        assert sample(registry, "fedai_router_relay_reconnects_total") == 0

        first.shutdown()
        await eventually(lambda: sample(registry, "fedai_router_relays_connected") == 0, 10, "the relay gone")
        replacement = await start_local_relay(port=port)
        await eventually(lambda: sample(registry, "fedai_router_relays_connected") == 1, 10, "the relay back")
        assert sample(registry, "fedai_router_relay_reconnects_total") == 1
        text = generate_latest(registry).decode()
        assert "# TYPE fedai_router_relay_reconnects_total counter" in text
    finally:
        await pool.close()
        first.shutdown()
        if replacement is not None:
            replacement.shutdown()
