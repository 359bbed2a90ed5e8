"""How many known nodes are fresh, stale, unverified and cooling down: the `fedai_router_nodes` gauge and the
public /status counts, updated after every registry refresh and on every /metrics scrape."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Gauge

from fedai_router.node_state import NodeState
from fedai_router.scheduler import Policy


class NodeCounts:
    def __init__(self, nodes: Mapping[str, NodeState], policy: Policy, gauge: Gauge) -> None:
        self.nodes = nodes  # the registry's nodes, by pubkey
        self.policy = policy  # freshness TTLs
        self.gauge = gauge  # labelled by state
        self.counts: dict[str, int] = {}  # fresh/stale/unverified/cooldown, as last updated

    def update(self) -> None:
        now = time.time()
        counts = {"fresh": 0, "stale": 0, "unverified": 0, "cooldown": 0}
        for node in self.nodes.values():
            counts["fresh" if self.policy.fresh(node.last_seen, node.heartbeat, now) else "stale"] += 1
            counts["unverified"] += not node.verified
            counts["cooldown"] += node.cooldown_until > now
        for state, n in counts.items():
            self.gauge.labels(state).set(n)
        self.counts = counts
