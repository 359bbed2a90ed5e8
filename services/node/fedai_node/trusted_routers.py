"""The routers the node accepts (signed requests, heartbeats): ROUTER_PUBLIC_KEY, plus the routers an operator
allowed through the admin API, minus the ones an operator blocked (runbooks/admin.md#node). One live set, read by
admission and the heartbeat; the admin API changes it in place."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping


class TrustedRouters(Collection[str]):
    def __init__(self, configured: frozenset[str]) -> None:
        self.configured = configured  # ROUTER_PUBLIC_KEY
        self.rules: dict[str, str] = {}  # router pubkey -> "allow" | "block"
        self._keys = configured

    def apply(self, rules: Mapping[str, str]) -> None:
        self.rules = dict(rules)
        allowed = {k for k, rule in rules.items() if rule == "allow"}
        blocked = {k for k, rule in rules.items() if rule == "block"}
        self._keys = (self.configured | allowed) - blocked

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)
