"""``fastagi history export --alarm ID --format replay``: one alarm as a self-contained
replay file (fastagi/domain/replay.py) that a site can send to an integrator: the alarm,
its timeline as offsets from the activation, the directory and policy at the time and
the server's ``[alarm]`` settings that shaped it (``alarm_snapshots``). No PIN, no
secret: the events hold none, deactivators and users are not exported, and every detail
key that names a secret is dropped anyway."""

from __future__ import annotations

from typing import Any

from fastagi.domain.replay import FORMAT, scrub
from fastagi.store import StoreError, Stores


async def replay_document(stores: Stores, alarm_id: int) -> dict[str, Any]:
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        raise StoreError(f"unknown alarm {alarm_id}")
    start = alarm.activated_at
    events = await stores.history.timeline(alarm_id)
    return {
        "format": FORMAT,
        "alarm": {
            "id": alarm.id,
            "extension": alarm.extension,
            "department": alarm.department_name,
            "activated_at": start.isoformat(),
            "deactivated_after": (
                (alarm.deactivated_at - start).total_seconds() if alarm.deactivated_at else None
            ),
            "deactivated_by": alarm.deactivated_by,
            "deactivation_reason": alarm.deactivation_reason,
            "drill": alarm.is_drill,
        },
        "directory": await stores.snapshots.of_alarm(alarm_id),
        # The server's settings that shaped it ({"alarm": {...}}; None before sql/012).
        "settings": scrub(await stores.snapshots.settings_of_alarm(alarm_id)),
        "events": [
            {
                "kind": event.kind,
                "at": round((event.occurred_at - start).total_seconds(), 3),
                "extension": event.extension,
                "department": event.department,
                "details": scrub(event.details),
            }
            for event in events
        ],
    }
