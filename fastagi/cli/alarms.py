"""``fastagi alarm ...`` and ``fastagi history ...``: alarms, their timelines, the history
of a period (CSV or JSON) and its summary. Drills are marked as such everywhere and never
counted among real alarms."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

from fastagi.admin.alarms import deactivate_alarm
from fastagi.admin.history import (
    EXPORT_FORMATS,
    HistoryExport,
    event_dict,
    history_filter,
    parse_time,
)
from fastagi.admin.replay import replay_document
from fastagi.cli.common import Builder, fail, operator
from fastagi.cli.output import details, print_json, print_listing, print_table, text, when
from fastagi.domain.alarm import Alarm
from fastagi.domain.drill import DrillReport, report_event_id
from fastagi.domain.events import EventKind
from fastagi.store import Stores

SINCE_HELP = "YYYY-MM-DD or an ISO date-time (local time unless it has an offset)"
UNTIL_HELP = "YYYY-MM-DD (that day included) or an ISO date-time (excluded)"


def register(builder: Builder) -> None:
    actions = builder.group("alarm", "alarms: list, show, deactivate")
    alarms = builder.command(
        actions, "list", "list the active alarms (drills marked DRILL)", _alarm_list, listing=True
    )
    alarms.add_argument("--all", action="store_true", help="recent alarms, active or not")
    builder.command(
        actions, "show", "an alarm and its timeline", _alarm_show, listing=True
    ).add_argument("id", type=int)
    stop = builder.command(actions, "deactivate", "deactivate an alarm", _alarm_deactivate)
    stop.add_argument("id", type=int)
    stop.add_argument("--reason", required=True)

    actions = builder.group("history", "the alarm history")
    export = builder.command(actions, "export", "export the events of a period", _history_export)
    export.add_argument(
        "--alarm",
        type=int,
        metavar="ID",
        help="one alarm (with --format replay: a self-contained replay file, no PINs)",
    )
    export.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help=SINCE_HELP,
    )
    export.add_argument(
        "--until",
        type=_until,
        metavar="DATE",
        help=UNTIL_HELP,
    )
    export.add_argument("--department", metavar="NAME", help="only this department's events")
    export.add_argument("--extension", metavar="EXT", help="only this extension's events")
    export.add_argument(
        "--kind", choices=sorted(EventKind), metavar="KIND", help="only events of this kind"
    )
    export.add_argument("--format", choices=(*EXPORT_FORMATS, "replay"), default="csv")
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
    summary = builder.command(
        actions,
        "summary",
        "real alarms of a period per department, and drills apart with their results",
        _history_summary,
        listing=True,
    )
    summary.add_argument("--since", required=True, type=_since, metavar="DATE", help=SINCE_HELP)
    summary.add_argument("--until", required=True, type=_until, metavar="DATE", help=UNTIL_HELP)


async def _alarm_list(stores: Stores, args: argparse.Namespace) -> int:
    alarms = (
        await stores.alarms.recent_alarms() if args.all else await stores.alarms.active_alarms()
    )
    print_listing(
        alarms,
        as_json=args.json,
        headers=[
            "ID",
            "KIND",
            "STATE",
            "DEPARTMENT",
            "EXTENSION",
            "ACTIVATED",
            "CYCLES",
            "DEACTIVATED BY",
        ],
        row=lambda a: [
            str(a.id),
            "DRILL" if a.is_drill else "alarm",
            a.state,
            a.department_name,
            a.extension or "-",
            when(a.activated_at),
            f"{a.cycles}/{a.drill.cycles}" if a.drill else str(a.cycles),
            a.deactivated_by or "-",
        ],
        empty="no active alarms" if not args.all else "no alarms",
    )
    return 0


async def _alarm_show(stores: Stores, args: argparse.Namespace) -> int:
    alarm = await _get_alarm(stores, args.id)
    events = await stores.history.timeline(alarm.id)
    if args.json:
        print_json(
            {"alarm": dataclasses.asdict(alarm), "timeline": [event_dict(e) for e in events]}
        )
        return 0
    print_table(
        ["FIELD", "VALUE"],
        [[f.name, text(getattr(alarm, f.name))] for f in dataclasses.fields(alarm)],
    )
    print()
    print_table(
        ["TIME", "EVENT", "EXTENSION", "DETAILS"],
        [[when(e.occurred_at), e.kind, e.extension or "-", details(e.details)] for e in events],
        empty="no events",
    )
    return 0


async def _alarm_deactivate(stores: Stores, args: argparse.Namespace) -> int:
    done = await deactivate_alarm(stores, args.id, reason=args.reason, by=operator())
    print(f"deactivated alarm {done.id} ({done.department_name})")
    return 0


async def _get_alarm(stores: Stores, alarm_id: int) -> Alarm:
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        fail(f"unknown alarm {alarm_id}")
    return alarm


async def _history_export(stores: Stores, args: argparse.Namespace) -> int:
    if args.format == "replay" or args.alarm is not None:
        return await _replay_export(stores, args)
    if args.since is None or args.until is None:
        fail("--since and --until are required (or --alarm ID --format replay)")
    if args.since >= args.until:  # in the flags' words; history_filter refuses it too
        fail("--since must be before --until")
    wanted = history_filter(
        args.since,
        args.until,
        department=args.department,
        extension=args.extension,
        kind=args.kind,
    )
    export = HistoryExport(stores, wanted, args.format)
    output = await export.text()
    if args.output is None:
        sys.stdout.write(output)
    else:
        try:
            args.output.write_text(output, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {args.output}: {exc.strerror or exc}")
        print(f"wrote {export.count} events to {args.output}", file=sys.stderr)
    return 0


async def _replay_export(stores: Stores, args: argparse.Namespace) -> int:
    if args.alarm is None or args.format != "replay":
        fail("--alarm ID goes with --format replay")
    document = await replay_document(stores, args.alarm)
    output = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(output)
        return 0
    try:
        args.output.write_text(output, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {args.output}: {exc.strerror or exc}")
    print(f"wrote the replay file of alarm {args.alarm} to {args.output}", file=sys.stderr)
    return 0


async def _history_summary(stores: Stores, args: argparse.Namespace) -> int:
    if args.since >= args.until:
        fail("--since must be before --until")
    tallies = await stores.alarms.tallies(args.since, args.until)
    drills = await stores.alarms.drills(args.since, args.until)
    reports = {}
    for drill in drills:
        event = await stores.history.find_event(report_event_id(drill.id))
        if event is not None:
            reports[drill.id] = DrillReport.from_details(
                drill.id, drill.department_name, event.details
            )
    real = [t for t in tallies if not t.drill]
    if args.json:
        print_json(
            {
                "since": args.since,
                "until": args.until,
                "alarms": [dataclasses.asdict(t) for t in real],
                "drills": [
                    {
                        "alarm": dataclasses.asdict(drill),
                        "report": reports[drill.id].details() if drill.id in reports else None,
                    }
                    for drill in drills
                ],
            }
        )
        return 0
    total = sum(t.alarms for t in real)
    print(f"real alarms from {when(args.since)} to {when(args.until)}: {total} (drills apart)")
    print_table(
        ["DEPARTMENT", "ALARMS", "PAGES", "MEDIAN DURATION", "ACTIVE"],
        [
            [
                t.department_name,
                str(t.alarms),
                str(t.pages),
                "-" if t.median_seconds is None else f"{t.median_seconds:.0f}s",
                str(t.still_active),
            ]
            for t in real
        ],
    )
    print()
    print(f"drills: {len(drills)}")
    print_table(
        ["ID", "DEPARTMENT", "STARTED", "BY", "RESULT", "DID NOT ANSWER"],
        [
            [
                str(drill.id),
                drill.department_name,
                when(drill.activated_at),
                drill.drill.requested_by if drill.drill else "-",
                _drill_result(drill, reports.get(drill.id)),
                ", ".join(reports[drill.id].not_answered) if drill.id in reports else "-",
            ]
            for drill in drills
        ],
    )
    return 0


def _drill_result(drill: Alarm, report: DrillReport | None) -> str:
    if drill.is_active:
        return "running"
    if report is None:
        return "no report"
    return f"{report.ending}, {'ok' if report.ok else 'MISSED'}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return text(value)


def _since(text: str) -> datetime:
    return _parse_time(text, end_of_day=False)


def _until(text: str) -> datetime:
    return _parse_time(text, end_of_day=True)


def _parse_time(text: str, *, end_of_day: bool) -> datetime:
    try:
        return parse_time(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
