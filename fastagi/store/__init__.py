"""PostgreSQL: the pool, the queries, the migrations runner, the embedded cluster."""

from fastagi.store.migrations import MigrationError, find_migrations_dir, migrate
from fastagi.store.pool import create_pool
from fastagi.store.probe import ProbeCall, ProbeStore

__all__ = [
    "MigrationError",
    "ProbeCall",
    "ProbeStore",
    "create_pool",
    "find_migrations_dir",
    "migrate",
]
