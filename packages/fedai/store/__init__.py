"""Postgres storage: pools, migrations, embedded server, and one module per table family."""

from fedai.store.db import create_pool, resolve_dsn
from fedai.store.migrations import migrate, migrate_dsn
from fedai.store.nonces import PostgresReplayGuard

__all__ = ["PostgresReplayGuard", "create_pool", "migrate", "migrate_dsn", "resolve_dsn"]
