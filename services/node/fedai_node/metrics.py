"""The node's Prometheus metrics, in its own registry (so several nodes can share one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedai.observability.metrics import LATENCY_BUCKETS
from fedai_node.runners.base import RunnerResult

STREAM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


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
        self.streams = Counter(
            "fedai_node_streams_total",
            "Streams on /infer/stream by outcome (ok, cancelled, disconnected, or the error code)",
            ["code"],
            registry=self.registry,
        )
        self.stream_seconds = Histogram(
            "fedai_node_stream_seconds", "Wall time of /infer/stream", buckets=STREAM_BUCKETS, registry=self.registry
        )
        self.ttft_seconds = Histogram(
            "fedai_node_ttft_seconds",
            "Time from a stream's request to its first chunk written",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stream_chunks = Counter(
            "fedai_node_stream_chunks_total", "Signed chunks written on streams", registry=self.registry
        )
        self.cancelled = Counter(
            "fedai_node_cancelled_total",
            "Generations stopped early: by the router (cancelled) or because its connection dropped (disconnected)",
            ["reason"],
            registry=self.registry,
        )
        self.announces = Counter(
            "fedai_node_announces_total", "node.announce publications, by result", ["result"], registry=self.registry
        )

    def count_usage(self, result: RunnerResult) -> None:
        """Count a served (or partly served) request's tokens."""
        self.tokens.labels("in").inc(result.input_tokens)
        self.tokens.labels("out").inc(result.output_tokens)
