"""What the administrators set up: every department pages someone, often enough to be
heard as set, and someone can stop an alarm by phone."""

from __future__ import annotations

from datetime import datetime

from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.tts.announcement import AnnouncementMeter


async def departments(context: Context) -> Finding:
    stores = context.stores
    listed = await stores.directory.list_departments()
    if not listed:
        return Finding.warn(
            "no departments: every alarm comes from an extension in no department",
            "fastagi department add NAME --paging-group GROUP; fastagi extension map ...",
        )
    snapshot = await stores.directory.load_directory()
    devices = {department.id: department.devices for department in snapshot.departments}
    silent = []
    for department in listed:
        if department.paging_group is None:
            silent.append(f"{department.name} has no paging group")
        elif not devices.get(department.id):
            silent.append(f"{department.name}'s paging group {department.paging_group} is empty")
    short = []
    meter = AnnouncementMeter(context.settings)
    try:
        for department in listed:
            interval = department.interval_seconds or snapshot.default_interval_seconds
            announcement = await meter.measure(department.name, department.patterns)
            if announcement is not None and interval < announcement.seconds:
                short.append(
                    f"{department.name} pages every {announcement.seconds:.1f} s, not"
                    f" {interval} s: its announcement is longer than the interval"
                )
    finally:
        await meter.close()
    if silent:
        return Finding.fail(
            "an alarm would page nobody: " + "; ".join(silent + short),
            "fastagi department set NAME --paging-group GROUP;"
            " fastagi paging-group device add GROUP PJSIP/201",
        )
    if short:
        return Finding.warn(
            "; ".join(short),
            "pages run back to back then; set a longer interval or a shorter [alarm] announcement",
        )
    return Finding.ok(f"{len(listed)} departments, each with a paging group of devices")


async def deactivators(context: Context) -> Finding:
    # A deactivator without a PIN cannot exist: pin_hash is NOT NULL with a CHECK
    # (sql/002_alarms.sql). What can: nobody, or everybody locked out.
    listed = await context.stores.deactivators.list_deactivators()
    if not listed:
        return Finding.warn(
            "no deactivator: no extension can stop an alarm by phone (*556), only the CLI",
            "fastagi deactivator add EXTENSION (it asks for the PIN)",
        )
    locked = [d for d in listed if d.locked_until is not None]
    if locked:
        names = ", ".join(f"{d.extension} until {_clock(d.locked_until)}" for d in locked)
        return Finding.warn(
            f"locked out after wrong PINs: {names}",
            "it ends by itself, or now: fastagi deactivator unlock EXTENSION",
        )
    return Finding.ok(f"{len(listed)} deactivator(s): {', '.join(d.extension for d in listed)}")


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%H:%M:%S")


CHECKS = (
    Check(
        "departments",
        "every department pages a group of devices, at its interval",
        departments,
        ("migrations",),
    ),
    Check("deactivators", "someone can stop an alarm by phone", deactivators, ("migrations",)),
)
