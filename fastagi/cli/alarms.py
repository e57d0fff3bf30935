"""``fastagi alarm ...`` and ``fastagi history ...``: alarms, their timelines, and the
history of a period (CSV or JSON)."""

from __future__ import annotations

import argparse
import dataclasses
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
from fastagi.cli.common import Builder, fail, operator
from fastagi.cli.output import details, print_json, print_table, text, when
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind
from fastagi.store import Stores


def register(builder: Builder) -> None:
    actions = builder.group("alarm", "alarms: list, show, deactivate")
    alarms = builder.command(actions, "list", "list the active alarms", _alarm_list, listing=True)
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
        "--since",
        required=True,
        type=_since,
        metavar="DATE",
        help="YYYY-MM-DD or an ISO date-time (local time unless it has an offset)",
    )
    export.add_argument(
        "--until",
        required=True,
        type=_until,
        metavar="DATE",
        help="YYYY-MM-DD (that day included) or an ISO date-time (excluded)",
    )
    export.add_argument("--department", metavar="NAME", help="only this department's events")
    export.add_argument("--extension", metavar="EXT", help="only this extension's events")
    export.add_argument(
        "--kind", choices=sorted(EventKind), metavar="KIND", help="only events of this kind"
    )
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")


async def _alarm_list(stores: Stores, args: argparse.Namespace) -> int:
    alarms = (
        await stores.alarms.recent_alarms() if args.all else await stores.alarms.active_alarms()
    )
    if args.json:
        print_json([dataclasses.asdict(a) for a in alarms])
        return 0
    print_table(
        ["ID", "STATE", "DEPARTMENT", "EXTENSION", "ACTIVATED", "CYCLES", "DEACTIVATED BY"],
        [
            [
                str(a.id),
                a.state,
                a.department_name,
                a.extension,
                when(a.activated_at),
                str(a.cycles),
                a.deactivated_by or "-",
            ]
            for a in alarms
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


def _since(text: str) -> datetime:
    return _parse_time(text, end_of_day=False)


def _until(text: str) -> datetime:
    return _parse_time(text, end_of_day=True)


def _parse_time(text: str, *, end_of_day: bool) -> datetime:
    try:
        return parse_time(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
