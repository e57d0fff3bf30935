"""``fastagi department ...`` and ``fastagi extension ...``: departments and which
extensions belong to them."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from fastagi.admin import departments as admin
from fastagi.cli.common import Builder, fail, load_settings_or_fail, operator
from fastagi.cli.output import print_json, print_table
from fastagi.domain.directory import UNKNOWN_DEPARTMENT
from fastagi.domain.language import CONFIRMATION_MODES
from fastagi.store import Stores
from fastagi.store.directory import DepartmentInfo
from fastagi.tts.announcement import AnnouncementMeter

INTERVAL_HELP = (
    "its own paging interval: seconds from the start of one page to the start of the next"
    " (pages never overlap: with an interval shorter than the announcement they run back"
    " to back)"
)


def register(builder: Builder) -> None:
    actions = builder.group("department", "departments: add, list, set, remove")
    add = builder.command(actions, "add", "add a department", _department_add)
    add.add_argument("name")
    add.add_argument("--interval", type=int, metavar="SECONDS", help=INTERVAL_HELP)
    add.add_argument("--paging-group", metavar="GROUP")
    builder.command(
        actions,
        "list",
        "list the departments, their announcement's length and real paging cycle",
        _department_list,
        listing=True,
    )
    builder.command(
        actions, "remove", "remove a department and its mappings", _department_rm
    ).add_argument("name")
    change = builder.command(
        actions,
        "set",
        "rename a department, change its interval, paging group, mode or language",
        _department_set,
    )
    change.add_argument("name")
    change.add_argument(
        "--rename",
        metavar="NEW_NAME",
        help="its new name (its alarms keep the old one; [notify.departments] finds"
        " recipients by name)",
    )
    interval = change.add_mutually_exclusive_group()
    interval.add_argument("--interval", type=int, metavar="SECONDS", help=INTERVAL_HELP)
    interval.add_argument(
        "--default-interval", action="store_true", help="use the global default interval"
    )
    paging = change.add_mutually_exclusive_group()
    paging.add_argument("--paging-group", metavar="GROUP")
    paging.add_argument("--no-paging-group", action="store_true")
    mode = change.add_mutually_exclusive_group()
    mode.add_argument(
        "--confirmation-mode",
        choices=CONFIRMATION_MODES,
        help="how the trigger asks: voice (names the alarm), neutral (gives nothing away),"
        " tone (a beep), display (a text, no sound), none (alarm at once)",
    )
    mode.add_argument(
        "--default-confirmation-mode", action="store_true", help="use the site's default mode"
    )
    language = change.add_mutually_exclusive_group()
    language.add_argument(
        "--language", metavar="CODE", help="the language its calls and pages speak (en, pl)"
    )
    language.add_argument(
        "--default-language", action="store_true", help="use the site's default language"
    )

    actions = builder.group("extension", "which extensions belong to which department")
    mapping = builder.command(
        actions, "map", "map an extension, a range (100-149) or a pattern (_1XX)", _extension_map
    )
    mapping.add_argument("department")
    mapping.add_argument("pattern")
    builder.command(actions, "unmap", "remove a mapping", _extension_unmap).add_argument("pattern")
    builder.command(
        actions,
        "lookup",
        "which department an extension is in, and why",
        _extension_lookup,
        listing=True,
    ).add_argument("extension")


async def _department_add(stores: Stores, args: argparse.Namespace) -> int:
    department = await admin.add_department(
        stores,
        args.name,
        interval_seconds=args.interval,
        paging_group=args.paging_group,
        by=operator(),
    )
    print(f"added department '{department.name}'")
    if args.interval is not None:
        await warn_if_shorter_than_announcement(stores, department, args.interval)
    return 0


async def _department_list(stores: Stores, args: argparse.Namespace) -> int:
    departments = await stores.directory.list_departments()
    policy = await stores.policy.load_settings()
    meter = AnnouncementMeter(load_settings_or_fail())
    try:
        announcements = [
            await meter.measure(d.name, d.patterns, d.language or policy.default_language)
            for d in departments
        ]
    finally:
        await meter.close()
    rows: list[dict[str, Any]] = []
    for department, announcement in zip(departments, announcements, strict=True):
        interval = department.interval_seconds or policy.default_interval_seconds
        rows.append(
            {
                **dataclasses.asdict(department),
                "announcement_seconds": round(announcement.seconds, 1) if announcement else None,
                "cycle_seconds": round(announcement.cycle(interval), 1)
                if announcement
                else interval,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [
            "DEPARTMENT",
            "INTERVAL",
            "ANNOUNCEMENT",
            "CYCLE",
            "PAGING GROUP",
            "MODE",
            "LANGUAGE",
            "EXTENSIONS",
        ],
        [
            [
                row["name"],
                f"{row['interval_seconds']}s"
                if row["interval_seconds"] is not None
                else f"default ({policy.default_interval_seconds}s)",
                "?" if row["announcement_seconds"] is None else f"{row['announcement_seconds']}s",
                f"{row['cycle_seconds']}s",
                row["paging_group"] or "-",
                row["confirmation_mode"] or f"default ({policy.confirmation_mode})",
                row["language"] or f"default ({policy.default_language})",
                " ".join(row["patterns"]) or "-",
            ]
            for row in rows
        ],
        empty="no departments",
    )
    if None in announcements:
        print("?: the announcement could not be rendered (is espeak-ng installed?)")
    return 0


async def warn_if_shorter_than_announcement(
    stores: Stores, department: DepartmentInfo, interval_seconds: int
) -> None:
    """On stderr, when pages would run back to back rather than ``interval_seconds`` apart
    (the announcement measured in the language the department's pages speak)."""
    name = department.name
    language = department.language or (await stores.policy.load_settings()).default_language
    meter = AnnouncementMeter(load_settings_or_fail())
    try:
        announcement = await meter.measure(name, department.patterns, language)
    finally:
        await meter.close()
    if announcement is not None and interval_seconds < announcement.seconds:
        print(
            f"warning: the interval of '{name}' ({interval_seconds}s) is shorter than its"
            f" announcement ({announcement.seconds:.1f}s with the lead-in): pages will run"
            f" back to back, one every {announcement.seconds:.1f}s",
            file=sys.stderr,
        )


async def _department_rm(stores: Stores, args: argparse.Namespace) -> int:
    await admin.remove_department(stores, args.name, by=operator())
    print(f"removed department '{args.name.strip()}'")
    return 0


async def _department_set(stores: Stores, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.rename is not None:
        changes["new_name"] = args.rename
    if args.interval is not None or args.default_interval:
        changes["interval_seconds"] = args.interval
    if args.paging_group is not None or args.no_paging_group:
        changes["paging_group"] = args.paging_group
    if args.confirmation_mode is not None or args.default_confirmation_mode:
        changes["confirmation_mode"] = args.confirmation_mode
    if args.language is not None or args.default_language:
        changes["language"] = args.language
    if not changes:
        fail(
            "nothing to change: give --rename, --interval, --default-interval, --paging-group,"
            " --confirmation-mode or --language"
        )
    department = await admin.set_department(stores, args.name, **changes, by=operator())
    print(f"changed department '{department.name}'")
    if args.interval is not None:
        await warn_if_shorter_than_announcement(stores, department, args.interval)
    return 0


async def _extension_map(stores: Stores, args: argparse.Namespace) -> int:
    pattern, department = await admin.map_extensions(
        stores, args.department, args.pattern, by=operator()
    )
    print(f"mapped {pattern.kind.name.lower()} '{pattern.text}' to '{department.name}'")
    return 0


async def _extension_unmap(stores: Stores, args: argparse.Namespace) -> int:
    await admin.unmap_extensions(stores, args.pattern, by=operator())
    print(f"unmapped '{args.pattern.strip()}'")
    return 0


async def _extension_lookup(stores: Stores, args: argparse.Namespace) -> int:
    result = await admin.lookup_extension(stores, args.extension)
    extension = result["extension"]
    if args.json:
        print_json(result)
    elif result["pattern"] is None:
        print(f"{extension}: {UNKNOWN_DEPARTMENT} (no mapping matches)")
        print(f"an alarm from it is keyed {result['alarm_key']}")
    else:
        others = [text for text in result["candidates"] if text != result["pattern"]]
        why = f"by {result['kind']} '{result['pattern']}'"
        if others:
            why += f", the most specific of {', '.join([result['pattern'], *others])}"
        print(f"{extension}: {result['department']} ({why})")
        devices = " ".join(result["devices"]) or "no devices"
        print(f"pages {devices} every {result['interval_seconds']}s")
    return 0
