"""A drill's ``drill_report``: built from its history once it has ended, recorded once.

The server whose loop ran the drill records it after that loop ended, so that every page
is in the history (each ``page_cycle`` names what every device did); the event's id is
derived from the drill's (fastagi/domain/drill.py ``report_event_id``), so a second
attempt, by this server or the CLI, writes nothing.
"""

from __future__ import annotations

import logging

from fastagi.alarms.recorder import HistoryRecorder
from fastagi.domain.drill import DrillReport, report_event_id, report_of
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores

logger = logging.getLogger(__name__)


async def record_drill_report(
    stores: Stores, recorder: HistoryRecorder, alarm_id: int, *, instance_id: str
) -> DrillReport | None:
    """Record the report of drill ``alarm_id`` if it has ended; its report, or None (not
    a drill, not ended, or PostgreSQL did not answer: logged). Never raises."""
    try:
        alarm = await stores.alarms.get_alarm(alarm_id)
        if alarm is None or alarm.drill is None or alarm.is_active:
            return None
        report = report_of(alarm, await stores.history.timeline(alarm_id))
    except Exception:
        logger.exception("cannot build the report of drill %s", alarm_id)
        return None
    if report.not_answered:
        logger.warning("drill %s: did not answer: %s", alarm_id, ", ".join(report.not_answered))
    await recorder.record(
        HistoryEvent(
            EventKind.DRILL_REPORT,
            alarm.id,
            alarm.extension or None,
            alarm.department_name,
            {**report.details(), "instance": instance_id},
            event_id=report_event_id(alarm.id),
        )
    )
    return report
