"""``fastagi replay``: says where replays run. A replay drives the sandbox Asterisk and
SIPp phones, development tools that are not in the wheel (fastagi_dev), and the runtime
never imports them; the command lives in ``python -m fastagi_dev replay`` in a clone."""

from __future__ import annotations

import argparse

from fastagi.cli.common import SubParsers, fail

HOW = (
    "a replay drives the sandbox Asterisk and SIPp phones, which are development tools"
    " (fastagi_dev) not installed with fastagi: write the file here with `fastagi history"
    " export --alarm ID --format replay --output FILE`, then, in a clone of fastagi-panic"
    " (make run's prerequisites installed), run `.venv/bin/python -m fastagi_dev replay"
    " FILE [--speed N]`"
)


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "replay", help="re-enact a recorded alarm (needs the development tools: see the error)"
    )
    parser.add_argument("alarm_id", nargs="?", help="the alarm to replay")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    fail(HOW)
