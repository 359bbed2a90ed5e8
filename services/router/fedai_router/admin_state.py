"""Operators' run-time changes (the admin API) as every replica applies them: held nodes (drained or banned), peer
rules, API keys and the router fee. Each replica polls `max(admin_audit.id)` every `ROUTER_ADMIN_SYNC_MS` and,
when it moved, reloads the admin tables and applies them; the replica that made a change applies it at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Protocol

import asyncpg

from fedai_router.pricing import Fees
from fedai_router.registry import Registry
from fedai_router.store.admin import AdminSnapshot, audit_mark, load_snapshot

log = logging.getLogger("fedai.router.admin")


class PeerRules(Protocol):
    """Where operators' peer rules go (`fedai_router.federation.policy.PeerPolicy.admin`)."""

    admin: dict[str, str]


class ApiKeyTable(Mapping[str, str]):
    """sha256(API key) hex -> client pubkey: ROUTER_API_KEYS, then the live keys made through the admin API."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.admin: dict[str, str] = {}

    def __getitem__(self, digest: str) -> str:
        found = self.env.get(digest)
        if found is None:
            found = self.admin[digest]
        return found

    def __iter__(self) -> Iterator[str]:
        yield from self.env
        yield from (k for k in self.admin if k not in self.env)

    def __len__(self) -> int:
        return len(self.env.keys() | self.admin.keys())


class AdminState:
    """The last admin snapshot this replica applied, and where it applies it."""

    def __init__(
        self, pool: asyncpg.Pool, registry: Registry, peers: PeerRules, api_keys: ApiKeyTable, fees: Fees
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.peers = peers
        self.api_keys = api_keys
        self.fees = fees
        self.snapshot = AdminSnapshot(mark=-1)

    @property
    def banned(self) -> frozenset[str]:
        return self.snapshot.banned

    async def sync(self) -> bool:
        """Reload and apply if anything changed since the last load; True if it did."""
        if await audit_mark(self.pool) == self.snapshot.mark:
            return False
        await self.reload()
        return True

    async def reload(self) -> None:
        self.apply(await load_snapshot(self.pool))

    def apply(self, snapshot: AdminSnapshot) -> None:
        self.registry.banned = snapshot.banned
        self.registry.index.hold(snapshot.drained | snapshot.banned)
        self.peers.admin = dict(snapshot.peers)
        self.api_keys.admin = dict(snapshot.api_keys)
        self.fees.apply(snapshot.settings)
        if snapshot.mark != self.snapshot.mark and self.snapshot.mark >= 0:
            log.info("admin changes applied", extra={"mark": snapshot.mark})
        self.snapshot = snapshot
