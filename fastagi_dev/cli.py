"""``python -m fastagi_dev``: the development commands (``make run``, ``make demo``, the
sandbox by hand). Like ``fastagi``, ``main(argv)`` returns an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastagi.cli.common import load_settings_or_fail, run_command


def build_parser() -> argparse.ArgumentParser:
    from fastagi_dev import demo, replay
    from fastagi_dev.sandbox import commands as sandbox_commands

    parser = argparse.ArgumentParser(
        prog="python -m fastagi_dev",
        description="Development tools: sandbox Asterisk, embedded PostgreSQL, demo.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = subparsers.add_parser(
        "run", help="sandbox Asterisk + embedded PostgreSQL + the server (make run)"
    )
    run.set_defaults(handler=_run_command)
    sandbox_commands.register(subparsers)
    demo.register(subparsers)
    replay.register(subparsers)
    return parser


def _run_command(args: argparse.Namespace) -> int:
    from fastagi.app import run
    from fastagi.logs import configure_logging
    from fastagi_dev.devenv import run_dev

    settings = load_settings_or_fail()
    configure_logging(settings.log_level)
    run(run_dev(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), sys.argv[1:] if argv is None else argv, name="fastagi_dev")
