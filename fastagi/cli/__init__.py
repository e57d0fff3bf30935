"""The ``fastagi`` command. ``main(argv)`` returns an exit code, so tests call it directly.

One module per resource (departments, paging, policy, deactivators, alarms) plus ``serve``,
``db``, ``freepbx`` (install into FreePBX) and ``check`` (would an alarm get through?);
each exposes ``register``, which adds parsers whose ``handler`` default is a function
``(args) -> int``. Administrative
changes go through fastagi.admin, the same functions the web console calls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastagi.cli.common import run_command


def build_parser() -> argparse.ArgumentParser:
    from fastagi.cli import (
        alarms,
        check,
        db,
        deactivators,
        departments,
        drills,
        freepbx,
        paging,
        policy,
        recordings,
        replay,
        serve,
        users,
    )
    from fastagi.cli.common import Builder

    parser = argparse.ArgumentParser(
        prog="fastagi", description="Panic-alarm FastAGI server for Asterisk and FreePBX."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(subparsers)
    db.register(subparsers)
    freepbx.register(subparsers)
    check.register(subparsers)
    replay.register(subparsers)
    builder = Builder(subparsers)
    for resource in (
        departments,
        paging,
        policy,
        deactivators,
        alarms,
        drills,
        users,
        recordings,
    ):
        resource.register(builder)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), sys.argv[1:] if argv is None else argv, name="fastagi")
