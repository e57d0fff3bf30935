"""``fastagi check``: prove, link by link, that an alarm would get through now.

One line per check (``OK``, ``WARN``, ``FAIL``, or ``SKIP`` when a check it needs
failed), what is wrong and what to do; ``--json`` for scripts. Exit status 0 when all
are OK, 1 with a WARN, 2 with a FAIL (fastagi/assurance/ does the checking).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TextIO

from fastagi.assurance import CHECKS, Report, Status, run_checks
from fastagi.cli.common import SubParsers, fail, load_settings_or_fail

NAME_WIDTH = max(len(check.name) for check in CHECKS)
STATUS_WIDTH = max(len(status.value) for status in Status)


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="prove that an alarm would get through now: database, Asterisk, phones,"
        " prompts, e-mail, SMS, configuration",
        description="Each line: OK, WARN or FAIL (SKIP: not checked, a line it needs"
        " failed), what is wrong and what to do. Exit status 0: all OK; 1: a WARN;"
        " 2: a FAIL. Nothing reaches a person, unless --send-test. Checks: "
        + ", ".join(check.name for check in CHECKS)
        + ".",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--send-test",
        action="store_true",
        help="also send a test e-mail and a test SMS to every recipient",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="CHECK",
        help="run this check (and those it needs) only; repeat for more",
    )
    parser.set_defaults(handler=_check_command)


def _check_command(args: argparse.Namespace) -> int:
    settings = load_settings_or_fail()
    # The lines say what is wrong; the libraries' own warnings would only repeat it.
    logging.basicConfig(level=logging.CRITICAL)
    try:
        report = asyncio.run(run_checks(settings, send_test=args.send_test, only=args.only))
    except ValueError as exc:  # an unknown --only name
        fail(str(exc))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, sys.stdout)
    return report.exit_code


def print_report(report: Report, out: TextIO) -> None:
    """One line per check, the remedy indented below it, and a summary."""
    indent = " " * (STATUS_WIDTH + 2 + NAME_WIDTH + 2)
    for result in report.results:
        out.write(f"{result.status.value:<{STATUS_WIDTH}}  {result.name:<{NAME_WIDTH}}  ")
        out.write(f"{result.message}\n")
        if result.remedy and result.status is not Status.OK:
            out.write(f"{indent}fix: {result.remedy}\n")
    counts = ", ".join(
        f"{report.count(status)} {status.value}"
        for status in (Status.FAIL, Status.WARN, Status.SKIP, Status.OK)
        if report.count(status)
    )
    out.write(f"{report.status.value}: {counts}\n")
