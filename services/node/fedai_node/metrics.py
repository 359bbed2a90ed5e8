"""The node's Prometheus metrics, in its own registry (so several nodes can share one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedai.observability.metrics import LATENCY_BUCKETS


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedai_node_requests_total", "Requests to /infer by result code", ["code"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "fedai_node_request_seconds", "Wall time of /infer", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.in_flight = Gauge("fedai_node_in_flight", "Requests being served now", registry=self.registry)
        self.tokens = Counter(
            "fedai_node_tokens_total", "Tokens metered, by direction", ["direction"], registry=self.registry
        )
        self.heartbeats = Counter(
            "fedai_node_heartbeats_total", "Heartbeats sent to routers, by result", ["result"], registry=self.registry
        )
        self.announces = Counter(
            "fedai_node_announces_total", "node.announce publications, by result", ["result"], registry=self.registry
        )
