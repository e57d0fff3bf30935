"""PostgreSQL: every SQL statement of the project lives in this package.

One module per concern, each a small class over the pool: ``alarms`` (alarm rows),
``history`` (the event table), ``directory`` (departments, mappings, paging groups),
``deactivators`` (PINs and lockouts), ``policy`` (the settings row), ``changes``
(``NOTIFY`` to every server, and the connection listening for it), ``leadership``
(advisory locks and the page gate), ``emergency`` (acknowledgements), ``probe``,
``users`` (the web console's users, sessions and failed logins), and
``journal`` (where history waits while PostgreSQL is down). :class:`Stores` holds one of
each over one pool. The store depends on fastagi.domain only.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from fastagi.store._common import StoreError
from fastagi.store.alarms import AlarmStore
from fastagi.store.changes import AlarmChange, ChangeListener, ChangeStore
from fastagi.store.deactivators import DeactivatorStore
from fastagi.store.directory import DirectoryStore
from fastagi.store.history import HistoryStore
from fastagi.store.migrations import MigrationError, find_migrations_dir, migrate
from fastagi.store.policy import PolicyStore
from fastagi.store.pool import create_pool
from fastagi.store.probe import ProbeCall, ProbeStore
from fastagi.store.recordings import RecordedLocation, RecordingStore
from fastagi.store.snapshots import SnapshotStore
from fastagi.store.users import UserStore


@dataclass(frozen=True)
class Stores:
    """One store of each concern over one pool."""

    alarms: AlarmStore
    history: HistoryStore
    directory: DirectoryStore
    deactivators: DeactivatorStore
    policy: PolicyStore
    changes: ChangeStore
    users: UserStore
    recordings: RecordingStore
    snapshots: SnapshotStore

    @classmethod
    def over(cls, pool: asyncpg.Pool[asyncpg.Record]) -> Stores:
        return cls(
            alarms=AlarmStore(pool),
            history=HistoryStore(pool),
            directory=DirectoryStore(pool),
            deactivators=DeactivatorStore(pool),
            policy=PolicyStore(pool),
            changes=ChangeStore(pool),
            users=UserStore(pool),
            recordings=RecordingStore(pool),
            snapshots=SnapshotStore(pool),
        )


__all__ = [
    "AlarmChange",
    "AlarmStore",
    "ChangeListener",
    "ChangeStore",
    "DeactivatorStore",
    "DirectoryStore",
    "HistoryStore",
    "MigrationError",
    "PolicyStore",
    "ProbeCall",
    "ProbeStore",
    "RecordedLocation",
    "RecordingStore",
    "SnapshotStore",
    "StoreError",
    "Stores",
    "UserStore",
    "create_pool",
    "find_migrations_dir",
    "migrate",
]
