"""The router's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedai.observability.metrics import LATENCY_BUCKETS


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedai_router_requests", "Requests by route and outcome code", ["route", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "fedai_router_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter("fedai_router_errors", "Errors returned by code", ["code"], registry=self.registry)
        self.attempts = Counter(
            "fedai_router_node_attempts", "Calls to nodes by result", ["result"], registry=self.registry
        )
        self.failovers = Counter(
            "fedai_router_failovers",
            "Retries on another node after a failure, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.node_latency = Histogram(
            "fedai_router_node_seconds",
            "Node call latency (successful calls)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.nodes = Gauge("fedai_router_nodes", "Known nodes by state", ["state"], registry=self.registry)
        self.metering_msat = Counter(
            "fedai_router_metered_msat", "Sum of verified metering prices", registry=self.registry
        )
        self.tokens = Counter("fedai_router_tokens", "Metered tokens", ["direction"], registry=self.registry)
        self.ttft = Histogram(
            "fedai_router_ttft_seconds",
            "Time to the first streamed chunk, from the request's arrival",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.offloads = Counter(
            "fedai_router_offloads",
            "Requests offloaded to peer routers, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.outbound_failures = Counter(
            "fedai_router_outbound_failures",
            "Failed or refused calls to nodes and peers, by target and reason (a fixed set: address_refused, "
            "redirect, dns_timeout, dns_error, connect_error, timeout, too_large, transport_error, http_Nxx)",
            ["target", "reason"],
            registry=self.registry,
        )
        self.dns_running = Gauge("fedai_router_dns_running", "Endpoint lookups running now", registry=self.registry)
        self.dns_waiting = Gauge(
            "fedai_router_dns_waiting", "Endpoint lookups waiting for a free slot", registry=self.registry
        )
        self.streams = Counter(
            "fedai_router_streams", "Streams by outcome (done, error, cancelled)", ["outcome"], registry=self.registry
        )
