"""Refused heartbeats in the router's log: one warning per node and reason per interval, however often it beats.

A node whose heartbeats are refused (a loopback endpoint without ROUTER_ALLOW_PRIVATE_ENDPOINTS, a descriptor
over a bound, a registry limit) keeps beating; the operator should see why once, not every two seconds. The
line names the node, its endpoint (without userinfo or query), the error code and the message the node got."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from fedai.observability.logging import redact_url
from fedai.protocol.errors import FedaiError

log = logging.getLogger("fedai.router")

LOG_INTERVAL_S = 60.0
MAX_REMEMBERED = 10_000  # (node, code) pairs; the oldest is forgotten first


class RefusalLog:
    """Logs a refusal unless the same node was refused with the same code within `interval_s`."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, max_remembered: int = MAX_REMEMBERED) -> None:
        self.interval_s = interval_s
        self.max_remembered = max_remembered
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()

    def due(self, node: str, code: str, now: float) -> bool:
        """True (and remembered) when this node and code were not logged within the interval."""
        key = (node, code)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_remembered:
            self._last.popitem(last=False)
        return True

    def refused(self, node: str, endpoint: str, err: FedaiError) -> None:
        if self.due(node, err.code.value, time.monotonic()):
            log.warning(
                f"heartbeat refused: {err.message}",
                extra={"node": node, "endpoint": redact_url(endpoint), "code": err.code.value},
            )
