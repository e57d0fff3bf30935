"""The ``config_changed`` event every administrative change leaves in the history."""

from __future__ import annotations

from typing import Any

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.history import HistoryStore


async def record_change(history: HistoryStore, action: str, *, by: str, **details: Any) -> None:
    """Note the change. A details key may not contain "pin" (the secret scan refuses it)."""
    await history.append_event(
        HistoryEvent(
            kind=EventKind.CONFIG_CHANGED,
            alarm_id=None,
            extension=None,
            department=None,
            details={"action": action, "by": by, **details},
        )
    )
