"""An alarm as the rest of the system sees it: one row of ``alarms``, and its states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastagi.domain.drill import Drill

ACTIVE = "active"
DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class Alarm:
    id: int  # negative: provisional, raised while PostgreSQL was down (in memory only)
    alarm_key: str
    department_id: int | None
    department_name: str
    extension: str
    state: str
    activated_at: datetime
    deactivated_at: datetime | None
    deactivated_by: str | None
    deactivation_reason: str | None
    cycles: int
    last_cycle_at: datetime | None
    drill: Drill | None = None  # set: a drill (fastagi/domain/drill.py), not a real alarm

    @property
    def is_drill(self) -> bool:
        return self.drill is not None

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE
