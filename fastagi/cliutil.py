"""What the sub-command modules share: the user-facing error and the database address.

A module of its own so that sub-command modules need not import ``fastagi.cli``, which
imports them all to build its parser.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from pydantic import ValidationError

from fastagi.config import load_settings


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message) from None


def database_dsn(args: argparse.Namespace) -> str:
    """``--dsn`` when given, else the settings' ``database.dsn``."""
    if args.dsn:
        return str(args.dsn)
    try:
        settings = load_settings()
    except (ValidationError, OSError, ValueError) as exc:
        fail(f"cannot load the settings: {exc}")
    return settings.database.dsn.get_secret_value()
