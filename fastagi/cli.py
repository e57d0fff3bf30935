"""The ``fastagi`` command. ``main(argv)`` returns an exit code, so tests call it directly.

Each subsystem owns its sub-commands: it exposes ``register(subparsers)``, which adds a
parser whose ``handler`` default is a function ``(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastagi.cliutil import CliError


def build_parser() -> argparse.ArgumentParser:
    from fastagi import admin, app
    from fastagi.store import commands as store_commands

    parser = argparse.ArgumentParser(
        prog="fastagi", description="Panic-alarm FastAGI server for Asterisk and FreePBX."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    app.register(subparsers)
    store_commands.register(subparsers)
    admin.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result: int = args.handler(args)
    except CliError as exc:
        print(f"fastagi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
