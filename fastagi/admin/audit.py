"""The ``config_changed`` event every administrative change leaves in the history, and
the ``NOTIFY fastagi_config`` that makes every running server reload its directory at
once (fastagi/store/changes.py): both in one transaction."""

from __future__ import annotations

from typing import Any

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores


async def record_change(stores: Stores, action: str, *, by: str, **details: Any) -> None:
    """Note the change and tell the servers. A details key may not contain "pin" (the
    secret scan refuses it)."""
    await stores.changes.record_config_change(
        HistoryEvent(
            kind=EventKind.CONFIG_CHANGED,
            alarm_id=None,
            extension=None,
            department=None,
            details={"action": action, "by": by, **details},
        )
    )
