"""What the sub-command modules share: the user-facing error and the database address.

A module of its own so that sub-command modules need not import ``fastagi.cli``, which
imports them all to build its parser.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from pydantic import ValidationError

from fastagi.config import Settings, load_settings


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message) from None


def settings_error(exc: ValidationError) -> str:
    """One line naming each bad setting and its problem, never its value (a value may
    be a secret): ``agi.port: Input should be less than or equal to 65535``."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(problems)


def load_settings_or_fail() -> Settings:
    """The settings, or a CliError whose one line says what is wrong with them."""
    try:
        return load_settings()
    except ValidationError as exc:
        fail(settings_error(exc))
    except OSError as exc:  # FASTAGI_CONFIG names a missing or unreadable file
        fail(f"cannot read the settings: {exc}")
    except ValueError as exc:  # the TOML file does not parse (tomllib.TOMLDecodeError)
        fail(f"cannot parse the settings file: {exc}")


def database_dsn(args: argparse.Namespace) -> str:
    """``--dsn`` when given, else the settings' ``database.dsn``."""
    if args.dsn:
        return str(args.dsn)
    return load_settings_or_fail().database.dsn.get_secret_value()
