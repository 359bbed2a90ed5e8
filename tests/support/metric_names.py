"""The metric names the code defines, read from the services' own registries (not a list kept by hand): every
series name a scrape of a router or a node can show, by family type (counters `_total`, histograms `_bucket`,
`_count`, `_sum`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from fedai.observability.payment_metrics import PaymentMetrics
from fedai_node.metrics import NodeMetrics
from fedai_router.federation.events import auction_events
from fedai_router.metrics import RouterMetrics
from fedai_router.relay_metrics import RelayPoolCollector

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


class _NoPool:
    """A relay pool with no relay: enough for the collector to list its families."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.connected = 0
        self.stats: dict[str, int] = {}


def code_registries() -> list[CollectorRegistry]:
    """A router's and a node's registries with every metric their parts register (the auction counter and the
    relay pool's collector are added by the federation and relay parts at start)."""
    router = RouterMetrics().registry
    auction_events(router)
    router.register(RelayPoolCollector(_NoPool()))
    PaymentMetrics("router", router)  # the payment metrics, registered by the router's and node's payment parts
    node = NodeMetrics().registry
    PaymentMetrics("node", node)
    return [router, node]


def series_names() -> set[str]:
    """Every series name the code can expose."""
    names: set[str] = set()
    for registry in code_registries():
        for family in registry.collect():  # labelled metrics with no child yet still yield their family
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names
