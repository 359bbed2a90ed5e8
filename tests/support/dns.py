"""A scripted DNS for router tests: it replaces only the lookup function of the router's real resolver, so the
address judgement, the connect-time guard, the concurrency bound and the timeout under test are the real ones."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

from fedai_router.resolver import AddrInfo, system_lookup


class FakeDNS:
    """Answers the names in `answers` with the given address (other names go to the system resolver). While
    `gate` is clear, those lookups block (as a slow resolver would) until it is set or 30 s pass."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = dict(answers or {})
        self.lookups: list[str] = []
        self.entered = 0  # scripted lookups that started (held ones included)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int, family: int, flags: int) -> Sequence[AddrInfo]:
        with self._lock:
            self.lookups.append(host)
        if host not in self.answers:
            return system_lookup(host, port, family, flags)
        with self._lock:
            self.entered += 1
        self.gate.wait(30)
        address = self.answers[host]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]
