"""``fastagi drill DEPARTMENT``: run the real alarm chain on purpose, as a drill, and
print its report (every device that did not answer)."""

from __future__ import annotations

import argparse
import dataclasses

from fastagi.admin.drills import NO_SERVER, start_drill, wait_for_drill
from fastagi.cli.common import Builder, operator
from fastagi.cli.output import print_json
from fastagi.domain.drill import MAX_CYCLES, MIN_CYCLES, report_lines
from fastagi.store import Stores

# A drill the servers do not page within this long is stopped and reported as failed.
START_TIMEOUT = 30.0
# After its end, how long to wait for the report its leader records.
REPORT_TIMEOUT = 10.0


def register(builder: Builder) -> None:
    drill = builder.command(
        builder.top,
        "drill",
        "run a drill: the real alarm chain, announced as a test, and its report",
        _drill,
        listing=True,
    )
    drill.description = (
        "Start a drill of DEPARTMENT: a running `fastagi serve` pages the drill's"
        " announcement ([drill] announcement) to the department's paging group (or"
        " --devices) as real page cycles, lights the lamps, sends [TEST] notifications"
        " when [drill] notify is on, calls the emergency destinations with"
        " --with-emergency, and stops by itself after --cycles pages. A real alarm of the"
        " department stops the drill at once. Prints the report; exit code 0 when every"
        " device answered every page, 1 when not (or no server paged the drill)."
    )
    drill.add_argument("department")
    drill.add_argument(
        "--cycles",
        type=int,
        default=1,
        metavar="N",
        help=f"page cycles before it stops by itself ({MIN_CYCLES}-{MAX_CYCLES}, default 1)",
    )
    drill.add_argument(
        "--devices",
        type=_devices,
        default=(),
        metavar="D1,D2",
        help="page these devices (PJSIP/290,PJSIP/291) instead of the paging group",
    )
    drill.add_argument(
        "--with-emergency",
        action="store_true",
        help="call the [emergency] destinations too (they hear that it is a test)",
    )
    drill.add_argument(
        "--no-wait", action="store_true", help="print the drill's id and return at once"
    )
    drill.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT,
        metavar="SECONDS",
        help=f"stop the drill when no server pages it within this long (default {START_TIMEOUT:g})",
    )


def _devices(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


async def _drill(stores: Stores, args: argparse.Namespace) -> int:
    by = operator()
    alarm = await start_drill(
        stores,
        args.department,
        cycles=args.cycles,
        devices=args.devices,
        emergency=args.with_emergency,
        by=by,
    )
    if args.no_wait:
        if args.json:
            print_json({"alarm": dataclasses.asdict(alarm)})
        else:
            print(f"drill {alarm.id} of {alarm.department_name} started")
        return 0
    if not args.json:
        plural = "s" if args.cycles != 1 else ""
        print(
            f"drill {alarm.id} of {alarm.department_name} started ({args.cycles} cycle{plural});"
            " waiting for its end",
            flush=True,
        )
    end = await wait_for_drill(
        stores,
        alarm.id,
        start_timeout=args.start_timeout,
        report_timeout=REPORT_TIMEOUT,
        by=by,
    )
    if args.json:
        print_json(
            {
                "alarm": dataclasses.asdict(end.alarm),
                "report": end.report.details() if end.report else None,
            }
        )
    elif end.report is not None:
        for line in report_lines(end.report):
            print(line)
        if end.alarm.deactivation_reason == NO_SERVER:
            print("no server paged the drill: is `fastagi serve` running?")
    return 0 if end.report is not None and end.report.ok else 1
